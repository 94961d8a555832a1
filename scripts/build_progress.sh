#!/usr/bin/env bash
# Show a live one-line counter of a ninja build: reads the build's output on stdin and rewrites
# "PREFIX [n/N]" on stdout at each of ninja's "[n/N] ..." lines; other lines are dropped.
#
#   usage: ... | bash scripts/build_progress.sh "setup: compiling mmcv ops"
#
# A bash read loop rather than awk: Debian's and Ubuntu's default awk is mawk, which reads its
# input in blocks, so an awk counter printed nothing until the 40-minute build ended. `read` takes
# one line as soon as it arrives and printf writes it at once. Exits 0 whatever the input.
prefix=${1:-progress}
seen=0
while IFS= read -r line || [ -n "$line" ]; do
  if [[ $line =~ ^[[:space:]]*(\[[0-9]+/[0-9]+\]) ]]; then
    printf '\r%s %s' "$prefix" "${BASH_REMATCH[1]}"
    seen=1
  fi
done
if [ "$seen" = 1 ]; then
  printf '\n'
fi
exit 0
