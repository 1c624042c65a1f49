#!/bin/sh
# Emits an assembly file embedding every file of $1 with .incbin, plus a table
# { name, data, size } ended by a zero entry (see include/embed.h).
set -eu
DIR=$1
echo '    .section .rodata.embed, "a"'
i=0
for f in "$DIR"/*; do
    [ -f "$f" ] || continue
    echo "    .balign 16"
    echo "embed_data_$i: .incbin \"$(realpath "$f")\""
    echo "embed_end_$i:"
    echo "embed_name_$i: .asciz \"$(basename "$f")\""
    i=$((i + 1))
done
echo '    .balign 4'
echo '    .global embedded_files'
echo 'embedded_files:'
j=0
while [ $j -lt $i ]; do
    echo "    .long embed_name_$j, embed_data_$j, embed_end_$j - embed_data_$j"
    j=$((j + 1))
done
echo '    .long 0, 0, 0'
echo '    .section .note.GNU-stack, "", @progbits'
