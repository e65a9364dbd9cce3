# Removes files older than N days from a folder and reports what it freed (PowerShell 2.0).
param(
    [string]$Folder = $env:TEMP,
    [int]$Days = 7
)
$ErrorActionPreference = 'Stop'
if (-not (Test-Path -LiteralPath $Folder)) {
    [Console]::Error.WriteLine("no such folder: $Folder")
    exit 2
}
$limit = (Get-Date).AddDays(-$Days)
$old = @(Get-ChildItem -LiteralPath $Folder -Recurse -Force -ErrorAction SilentlyContinue |
    Where-Object { -not $_.PSIsContainer -and $_.LastWriteTime -lt $limit })
$bytes = 0
foreach ($file in $old) {
    $bytes += $file.Length
    Remove-Item -LiteralPath $file.FullName -Force -ErrorAction SilentlyContinue
}
Write-Output ("removed {0} files, {1:N1} MB older than {2} days from {3}" -f $old.Count, ($bytes / 1MB), $Days, $Folder)
exit 0
