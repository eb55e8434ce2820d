#!/usr/bin/env python3
"""Turns prelude.rb into a C source defining kf_prelude_rb (a NUL-terminated string)."""
import sys

src, out = sys.argv[1], sys.argv[2]
data = open(src, 'rb').read()
with open(out, 'w') as f:
    f.write('/* Generated from prelude.rb by embed.py; do not edit. */\n')
    f.write('#include "internal.h"\n')
    f.write('const char kf_prelude_rb[] = {\n')
    for i in range(0, len(data), 16):
        f.write('    ' + ', '.join('0x%02x' % b for b in data[i:i + 16]) + ',\n')
    f.write('    0x00\n};\n')
