#!/usr/bin/env python3
"""Writes the image test's inputs (Debian's python3-skimage photos, re-encoded by PIL)
and models (randomly initialised, saved by PyTorch) into OUT_DIR.

images/: <photo>.jpg and <photo>.png for chelsea, coffee, astronaut, rocket, camera
(grayscale) and logo (RGBA; its JPEG converted to RGB first), chelsea.webp, and
chelsea_exif<k>.jpg for every EXIF orientation k = 2..8; bad/: a truncated JPEG
(skimage's truncated.jpg, and one cut in half), a CMYK JPEG, a text file, a PNG whose
header says 30000x30000 and an empty file; big.png, a 2400x1600 photo (slow to decode).
ident/model.pt: TorchScript identity (the server's preprocessed tensor comes back as the
output). Usage: image_fixtures.py OUT_DIR
"""
import os
import struct
import sys
import zlib

import skimage.data
import torch
from PIL import Image

out = sys.argv[1]
data_dir = os.path.dirname(skimage.data.__file__)
os.makedirs(os.path.join(out, 'images'), exist_ok=True)
os.makedirs(os.path.join(out, 'bad'), exist_ok=True)

for name in ('chelsea.png', 'coffee.png', 'astronaut.png', 'rocket.jpg', 'camera.png', 'logo.png'):
    im = Image.open(os.path.join(data_dir, name))
    im.load()
    stem = os.path.splitext(name)[0]
    im.save(os.path.join(out, 'images', stem + '.png'))
    (im.convert('RGB') if im.mode not in ('RGB', 'L') else im).save(
        os.path.join(out, 'images', stem + '.jpg'), quality=90)

chelsea = Image.open(os.path.join(data_dir, 'chelsea.png')).convert('RGB')
chelsea.save(os.path.join(out, 'images', 'chelsea.webp'), quality=90)
for k in range(2, 9):
    exif = Image.Exif()
    exif[0x0112] = k  # Orientation
    chelsea.save(os.path.join(out, 'images', f'chelsea_exif{k}.jpg'), quality=90, exif=exif)

with open(os.path.join(data_dir, 'truncated.jpg'), 'rb') as f:
    open(os.path.join(out, 'bad', 'truncated.jpg'), 'wb').write(f.read())
with open(os.path.join(out, 'images', 'coffee.jpg'), 'rb') as f:
    whole = f.read()
open(os.path.join(out, 'bad', 'cut.jpg'), 'wb').write(whole[:len(whole) // 2])
chelsea.convert('CMYK').save(os.path.join(out, 'bad', 'cmyk.jpg'), quality=90)
chelsea.resize((2400, 1600)).save(os.path.join(out, 'big.png'))  # slow to decode: queue tests
open(os.path.join(out, 'bad', 'text.txt'), 'w').write('this is not an image\n' * 10)
open(os.path.join(out, 'bad', 'empty.png'), 'wb').write(b'')


def chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


huge = (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 30000, 30000, 8, 2, 0, 0, 0))
        + chunk(b'IDAT', zlib.compress(b'\0' * 1024)) + chunk(b'IEND', b''))
open(os.path.join(out, 'bad', 'huge.png'), 'wb').write(huge)


class Identity(torch.nn.Module):
    def forward(self, x):
        return x + 0.0


os.makedirs(os.path.join(out, 'ident'), exist_ok=True)
torch.jit.script(Identity()).save(os.path.join(out, 'ident', 'model.pt'))
print('image fixtures written to', out)
