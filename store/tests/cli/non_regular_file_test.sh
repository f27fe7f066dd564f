#!/usr/bin/env bash
# A path that names a FIFO, a device or a directory is refused at once, with an error naming it
# and a clean exit code (2 InvalidArgument or 4 I/O error), by every command; nothing hangs (each
# command runs under `timeout 10`: exit 124 means it hung) and the FIFO is left as it was.
#
#   non_regular_file_test.sh PATH_TO_DBDB
source "$(dirname "$0")/lib.sh"
cd "$tmp" || exit 2

mkfifo fifo
mkdir dir
make_worked_example ex.dbdb || fail "creating a database"
ln -s ex.dbdb link.dbdb

# refused WHAT MESSAGE_REGEX: the last `run` failed promptly with a clean code and the message.
refused() {
  if [ "$rc" -eq 124 ]; then
    fail "$1: hung (killed by timeout 10)"
  elif [ "$rc" -ne 2 ] && [ "$rc" -ne 4 ]; then
    fail "$1: exit $rc, expected 2 (invalid argument) or 4 (I/O error)"
  elif ! grep -Eq "$2" <<<"$err"; then
    fail "$1: exit $rc but the error does not match /$2/: $err"
  else
    pass "$1: refused (exit $rc)"
  fi
}

for cmd in "get fifo k" "scan fifo" "stat fifo" "check fifo" "dump fifo" "put fifo k v" "put --create fifo k v" \
           "del fifo k" "incr fifo n" "compact fifo"; do
  run timeout 10 "$dbdb" $cmd
  refused "dbdb $cmd" "fifo is not a regular file"
done
run timeout 10 "$dbdb" shell fifo </dev/null
refused "dbdb shell fifo" "fifo is not a regular file"
[ -p fifo ] && pass "the FIFO is still a FIFO" || fail "the FIFO was replaced"

for cmd in "get /dev/null k" "put /dev/null k v" "dump /dev/null"; do
  run timeout 10 "$dbdb" $cmd
  refused "dbdb $cmd" "/dev/null is not a regular file"
done
for cmd in "get dir k" "put dir k v" "dump dir"; do
  run timeout 10 "$dbdb" $cmd
  refused "dbdb $cmd" "dir is not a regular file|Is a directory"
done

# A symbolic link to a database is a regular file to open.
run timeout 10 "$dbdb" get link.dbdb apple
expect_rc 0 "dbdb get through a symbolic link"
expect_out red "it reads the database the link names"

finish
