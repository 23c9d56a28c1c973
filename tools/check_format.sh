#!/bin/sh
# Every hand-written C file must be as clang-format leaves it (.clang-format
# at the top level). The generated special-range table is exempt: its layout
# is the generator's.
set -eu
root=${1:?usage: check_format.sh SOURCE_ROOT [CLANG_FORMAT]}
clang_format=${2:-clang-format}
cd "$root"
find lib include tests tools bindings examples -name '*.[ch]' ! -name special_table.c \
  ! -path '*/node_modules/*' -print | sort | xargs "$clang_format" --dry-run --Werror
