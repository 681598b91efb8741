#!/usr/bin/env bash
# Runs every fuzz target of the repository's packages, one after the other, for FUZZTIME each.
#
#   scripts/fuzz.sh                 every target (func FuzzXxx(f *testing.F) in a *_test.go file
#                                   outside e2e/), 5s each
#   FUZZTIME=1m scripts/fuzz.sh     longer (make fuzz); FUZZTIME takes what -fuzztime takes
#                                   (a duration, or a count of runs such as 10000x)
#
# `make test` runs it with a few seconds per target, `make fuzz` with a minute. A target that
# fails leaves the input that made it fail in its package's testdata/fuzz/<target>/; the script
# names those files at the end and exits non-zero. Fix the bug and commit the file with the fix:
# every `go test` runs it from then on as a regression case.
set -euo pipefail

cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-5s}

case ${1:-} in
-h | --help)
	sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$0"
	exit 0
	;;
esac

# PACKAGE_DIR TARGET, one pair a line, in a stable order.
targets=$(grep -rEo --include='*_test.go' --exclude-dir=e2e --exclude-dir=.git --exclude-dir=.bin \
	--exclude-dir=testdata '^func Fuzz[A-Za-z0-9_]*\([A-Za-z_][A-Za-z0-9_]* \*testing\.F\)' . |
	sed -E 's|^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*|\1 \2|' | sort -u)
if [[ -z $targets ]]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

failed=()
start=$SECONDS
while read -r dir name; do
	echo "== $name (./$dir/, $fuzztime)"
	# No -race: fuzzing builds its own instrumented binary, and the race detector would only
	# slow every run down.
	if ! go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" "./$dir/"; then
		failed+=("$name (./$dir/)")
	fi
done <<<"$targets"

echo "== $(wc -l <<<"$targets") fuzz targets in $((SECONDS - start))s"
if ((${#failed[@]})); then
	echo "failed: ${failed[*]}" >&2
	new=$(git status --porcelain --untracked-files=all -- '*/testdata/fuzz/*' | sed -n 's/^?? //p')
	if [[ -n $new ]]; then
		printf 'new failing inputs (commit each with its fix as a regression case):\n%s\n' "$new" >&2
	fi
	exit 1
fi
