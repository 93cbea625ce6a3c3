"""Published catalogues: signed by the network's catalogue key, served to agents, and the
reference every submission is checked against."""
