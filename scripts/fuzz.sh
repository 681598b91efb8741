#!/usr/bin/env bash
# Runs every fuzz target of the repository's packages, one after the other, for FUZZTIME each.
#
#   scripts/fuzz.sh                 every target (func FuzzXxx(f *testing.F) in a *_test.go file
#                                   outside e2e/), 5s each
#   FUZZTIME=1m scripts/fuzz.sh     longer (make fuzz); FUZZTIME takes what -fuzztime takes
#                                   (a duration, or a count of runs such as 10000x)
#
# `make test` runs each target for a count of inputs (300x), `make fuzz` for a minute. A target
# that fails leaves the input that made it fail in its package's testdata/fuzz/<target>/; the
# script names those files at the end and exits non-zero. Fix the bug and commit the file with
# the fix: every `go test` runs it from then on as a regression case.
#
# Go 1.26's fuzzing coordinator can fail a duration-bounded run with a bare "context deadline
# exceeded" when the time runs out while a worker is busy (go.dev/issue/75804, fixed in Go
# 1.27): no input failed, none is written. A run that ends so, with no new input in testdata, is
# reported as that and not counted as a failure. Count-bounded runs (Nx) never meet it.
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
	before=$(ls "$dir/testdata/fuzz/$name" 2>/dev/null | sort || true)
	if ! out=$(go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" "./$dir/" 2>&1); then
		echo "$out"
		after=$(ls "$dir/testdata/fuzz/$name" 2>/dev/null | sort || true)
		if [[ $before == "$after" ]] && grep -q '^    context deadline exceeded$' <<<"$out" &&
			! grep -q -e 'Failing input' -e 'panic:' <<<"$out"; then
			echo "== $name: stopped by Go's fuzzing deadline race (go.dev/issue/75804), no failing input"
			continue
		fi
		failed+=("$name (./$dir/)")
	else
		echo "$out"
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
