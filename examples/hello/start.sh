#!/bin/sh
# Writes the page with this release's GREETING (config:set hello GREETING=hi),
# then serves it on $PORT.
set -e
mkdir -p /tmp/www
awk -v greeting="${GREETING:-Hello}" '{
  while ((at = index($0, "{{GREETING}}")) > 0)
    $0 = substr($0, 1, at - 1) greeting substr($0, at + 12)
  print
}' /app/www/index.html > /tmp/www/index.html
exec httpd -f -p "${PORT:-5000}" -h /tmp/www
