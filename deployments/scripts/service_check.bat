@echo off
rem Service report for a Windows server (cmd.exe); exits 1 when a service is not running.
setlocal
set "SERVICE=%~1"
if "%SERVICE%"=="" set "SERVICE=W32Time"
echo host: %COMPUTERNAME%
echo date: %DATE% %TIME%
sc query "%SERVICE%" | find "RUNNING" >nul
if errorlevel 1 (
  echo service %SERVICE% is not running 1>&2
  exit /b 1
)
echo service %SERVICE% is running
exit /b 0
