#!/bin/sh
# make test's system packages. The dfd.serve page test (tests/test_serve.py) drives Debian's chromium
# through its driver, at the paths Debian's packages put them. Present: nothing to do (two stats). Missing,
# as root with apt-get (CI, containers): installed. Otherwise one line says what to install, and make test
# stops before any test runs rather than failing one test after minutes.
BROWSER=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver
PACKAGES="chromium chromium-driver"

present() { [ -x "$BROWSER" ] && [ -x "$DRIVER" ]; }

present && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make test: installing Debian's $PACKAGES with apt-get (the dfd.serve page test drives them)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null && apt-get install -y -q --no-install-recommends $PACKAGES </dev/null
    present && exit 0
fi
echo "make test: the dfd.serve page test needs Debian's chromium and chromium-driver ($BROWSER, $DRIVER):" \
     "run 'sudo apt-get install $PACKAGES', then make test again" >&2
exit 1
