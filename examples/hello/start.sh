#!/bin/sh
# Writes the page with this release's GREETING (config:set hello GREETING=hi),
# then serves it on $PORT. The greeting is taken as it is: no escapes, and a
# greeting that itself holds {{GREETING}} is not expanded again.
set -e
mkdir -p /tmp/www
GREETING="${GREETING:-Hello}" awk '{
  line = $0; out = ""
  while ((at = index(line, "{{GREETING}}")) > 0) {
    out = out substr(line, 1, at - 1) ENVIRON["GREETING"]
    line = substr(line, at + 12)
  }
  print out line
}' /app/www/index.html > /tmp/www/index.html
exec httpd -f -p "${PORT:-5000}" -h /tmp/www
