#!/bin/sh
# Emits an assembly file embedding every file of $1 with .incbin, plus a table
# { name, data, size } ended by a zero entry (see services/httpd/static.h).
set -eu
DIR=$1
echo '    .section .rodata'
i=0
for f in "$DIR"/*; do
    [ -f "$f" ] || continue
    echo "    .balign 16"
    echo "static_data_$i: .incbin \"$(realpath "$f")\""
    echo "static_end_$i:"
    echo "static_name_$i: .asciz \"$(basename "$f")\""
    i=$((i + 1))
done
echo '    .balign 4'
echo '    .global static_files'
echo 'static_files:'
j=0
while [ $j -lt $i ]; do
    echo "    .long static_name_$j, static_data_$j, static_end_$j - static_data_$j"
    j=$((j + 1))
done
echo '    .long 0, 0, 0'
echo '    .section .note.GNU-stack, "", @progbits'
