#!/bin/sh
# Lists file systems and their use; exits 1 if any is fuller than $1 percent (default 90).
limit=${1:-90}
status=0
df -P | awk 'NR > 1 { sub("%", "", $5); print $5, $6 }' | {
  while read -r used mount; do
    echo "$mount: ${used}% used"
    if [ "$used" -gt "$limit" ]; then
      echo "WARNING: $mount is above ${limit}%" >&2
      status=1
    fi
  done
  exit $status
}
