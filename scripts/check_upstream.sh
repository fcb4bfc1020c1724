#!/usr/bin/env bash
# For maintainers: find upstream drift before users do.
#
# Builds a throwaway venv with the newest releases that setup.py allows (no constraints.txt), prints
# every package whose newest release differs from its pin in constraints.txt (the reference stack
# first), runs the parity tests there (every artifact against transformers, the processor's prompts
# and pixels, the chat templates), and, when some fail, moves each changed reference package back to
# its pin one at a time and reruns the failures: a failure that passes with one package pinned back
# is that package's change. Exit 0: the newest releases pass (constraints.txt may move, see its
# header); 1: something changed behaviour (the report names what); 2: the venv could not be built.
#
#   bash scripts/check_upstream.sh                 # everything at its newest
#   KEEP=torch,torchvision bash scripts/check_upstream.sh   # hold these at their pins (multi-GB)
#   CHECK_UPSTREAM_TESTS="tests/runtime/test_processing.py" bash scripts/check_upstream.sh
#   CHECK_UPSTREAM_DIR=/tmp/upstream bash scripts/check_upstream.sh   # keep the venv there
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PYTHON="${PYTHON:-python3}"
REFERENCE="transformers tokenizers torch torchvision onnxruntime onnxruntime-genai"
TESTS="${CHECK_UPSTREAM_TESTS:-tests/verify tests/runtime/test_processing.py tests/runtime/test_chat_templates.py}"
if [ -n "${CHECK_UPSTREAM_DIR:-}" ]; then
  work="$CHECK_UPSTREAM_DIR"; mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/genai-qwen3vl-upstream.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
say() { printf '%s\n' "$*" >&2; }
pin_of() { grep -i -E "^$(echo "$1" | sed 's/[-_]/[-_]/g')==" constraints.txt | head -1 | cut -d= -f3; }
version_of() { "$work/venv/bin/python" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }

say "building a throwaway venv in $work with the newest releases setup.py allows ..."
"$PYTHON" -m venv "$work/venv" || exit 2
pip=("$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip || exit 2
held=()
KEEP="${KEEP:-}"
for name in ${KEEP//,/ }; do
  held+=("$name==$(pin_of "$name")")
done
# setup.py's ranges only: no constraints file, newest allowed wins
PYTHONWARNINGS="ignore::UserWarning" "${pip[@]}" --upgrade --upgrade-strategy eager -e ".[test]" "${held[@]}" || exit 2

# a machine-wide pip constraint (this project's dev machines cap torch at the release on their disk)
# hides newer releases: say so, and lift it for this venv alone with PIP_CONSTRAINT=/dev/null
cap=$("$work/venv/bin/python" -m pip config list 2>/dev/null | grep -i "constraint" | paste -sd" " || true)
[ -n "$cap" ] && say "note: pip's own configuration constrains this install too ($cap); PIP_CONSTRAINT=/dev/null lifts it"

changed=()
say ""
say "package                  pinned         newest allowed"
for name in $REFERENCE $("$work/venv/bin/python" -m pip list --format=freeze --exclude-editable | cut -d= -f1); do
  pinned=$(pin_of "$name"); newest=$(version_of "$name")
  [ -z "$pinned" ] || [ -z "$newest" ] || [ "$pinned" = "$newest" ] && continue
  case " ${changed[*]} " in *" $name "*) continue ;; esac
  changed+=("$name")
  printf '%-24s %-14s %s\n' "$name" "$pinned" "$newest" >&2
done
[ ${#changed[@]} -eq 0 ] && say "(none: every package is at its pin)"

say ""
say "running the parity tests against the newest releases: $TESTS"
# shellcheck disable=SC2086
(cd "$root" && "$work/venv/bin/python" -m pytest $TESTS -q -p no:cacheprovider --junitxml="$work/newest.xml" 2>&1 | tail -n 30) >&2
rc=$?
if [ "$rc" -eq 0 ]; then
  say ""
  say "the newest releases pass the parity tests: constraints.txt can move to them (see its header)"
  exit 0
fi
failed=$("$work/venv/bin/python" - "$work/newest.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET

for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    if case.find("failure") is not None or case.find("error") is not None:
        print(case.get("classname").replace(".", "/") + ".py::" + case.get("name"))
PY
)
if [ -z "$failed" ]; then
  say "pytest exited $rc with no failing test to attribute (a collection error? see above)"
  exit 1
fi
say ""
say "failing with the newest releases:"
say "$failed"
say ""
say "rerunning them at the newest releases first (a failure that does not repeat is no upstream change) ..."
# shellcheck disable=SC2086
if (cd "$root" && "$work/venv/bin/python" -m pytest $failed -q -p no:cacheprovider 2>&1 | tail -n 3) >&2; then
  say "=> the failures did not repeat: flaky, or the working tree changed during the run; run the script again"
  exit 1
fi
blamed=0
for name in $REFERENCE; do
  case " ${changed[*]} " in *" $name "*) ;; *) continue ;; esac
  say ""
  say "moving $name back to its pin $(pin_of "$name") and rerunning the failures ..."
  "${pip[@]}" "$name==$(pin_of "$name")" || continue
  # shellcheck disable=SC2086
  if (cd "$root" && "$work/venv/bin/python" -m pytest $failed -q -p no:cacheprovider 2>&1 | tail -n 3) >&2; then
    say "=> $name $(pin_of "$name") -> newest changed what these tests check"
    blamed=1
  fi
  "${pip[@]}" --upgrade "$name" "${held[@]}" >/dev/null 2>&1
done
[ "$blamed" -eq 0 ] && say "=> no single reference package explains the failures: a combination, or another package above"
exit 1
