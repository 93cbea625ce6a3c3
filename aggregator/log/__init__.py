"""The transparency log: RFC 9162 leaves and stored perfect-subtree nodes, signed C2SP
checkpoints, receipts."""
