#!/bin/ksh
# Prints a small inventory of the machine it runs on.
typeset host=$(uname -n)
print "host:    $host"
print "kernel:  $(uname -sr)"
print "shell:   ksh ${.sh.version:-unknown}"
print "uptime:  $(uptime)"
