# Least-privilege permissions for the fedqi agent home on Windows: only the account the task
# runs as (and SYSTEM) may read the private key and the outbox.
#   powershell -ExecutionPolicy Bypass -File set-key-permissions.ps1 -Account "NT SERVICE\fedqi"
param(
    [Parameter(Mandatory = $true)][string]$Account,
    [string]$AgentHome = "C:\ProgramData\fedqi-agent"
)
$ErrorActionPreference = "Stop"
icacls $AgentHome /inheritance:r | Out-Null
icacls $AgentHome /grant:r "${Account}:(OI)(CI)M" "SYSTEM:(OI)(CI)F" | Out-Null
icacls $AgentHome /remove "Users" "Authenticated Users" "Everyone" 2>$null | Out-Null
Write-Output "permissions set on $AgentHome for $Account"
