#!/usr/bin/env bash
# Remakes the README's pictures (docs/*.png) from a real sandbox farm:
# the HTML timeline of a rolling deploy and the `status --watch` view
# during a recycle, both rendered by headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --workspace
bin=target/debug/farmctl
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
shot() { chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$work/profile" --window-size="$2" --screenshot="$3" "file://$1" 2>/dev/null; }

# The timeline of a rolling deploy under traffic.
$bin demo --deploy --dir "$work/demo" -q >/dev/null
$bin --state-dir "$work/demo/state" runs show --html "$work/run.html" >/dev/null
shot "$work/run.html" 1100,760 docs/timeline.png

# The watch view while a recycle runs.
$bin demo --serve --dir "$work/farm" >/dev/null 2>&1 &
serve=$!
for _ in $(seq 1 100); do [ -f "$work/farm/inventory.yaml" ] && break; sleep 0.2; done
sleep 1
$bin --state-dir "$work/state" recycle -i "$work/farm/inventory.yaml" --yes -q >/dev/null &
recycle=$!
sleep 1.2
{ echo '<html><body style="background:#1e1e1e;margin:0"><pre style="color:#e6e6e6;font:13px/1.35 monospace;padding:14px">'
  echo "\$ farmctl status -i inventory.yaml --watch"
  echo
  $bin --state-dir "$work/state" status -i "$work/farm/inventory.yaml" --watch --count 1 | sed 1d \
    | sed 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g'
  echo '</pre></body></html>'; } > "$work/watch.html"
shot "$work/watch.html" 1400,260 docs/watch.png
wait "$recycle"
kill "$serve"
echo "docs/timeline.png and docs/watch.png remade"
