#!/usr/bin/env python3
"""PyTorch's "save and load the model" tutorial, served: save weights -> upload -> predict
an image -> label.

    PYTHONPATH=build/clients/python python3 clients/python/examples/tutorial.py \
        --target localhost:50051 --image cat.jpg [--arch vgg16|resnet18]

The tutorial loads VGG16 with ImageNet weights; nothing is downloaded here, so the model is
randomly initialised (its labels are meaningless, but the server's answer must equal
PyTorch's on the same file). The labels are torchvision's ImageNet class names (shipped with
torchvision, no download). resnet18 shows a model the server has no built-in architecture
for: its TorchScript template (architecture.pt) goes with the state dict.
"""
import argparse
import os

import numpy as np
import torch
import torchvision.models as models
import torchvision.transforms as T
from PIL import Image, ImageOps

from modelserver_client import ModelServerClient

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
ap.add_argument('--target', default='localhost:50051')
ap.add_argument('--token', default=os.environ.get('MODEL_SERVER_TOKEN'), help='admin token')
ap.add_argument('--arch', default='vgg16', choices=['vgg16', 'resnet18'])
ap.add_argument('--model', default=None, help='name in the store (default: --arch)')
ap.add_argument('--image', required=True)
ap.add_argument('--workdir', default='.')
args = ap.parse_args()
os.makedirs(args.workdir, exist_ok=True)
name = args.model or args.arch

# 1. The tutorial: a model, its state dict saved.
model = getattr(models, args.arch)()
weights_path = os.path.join(args.workdir, 'model_weights.pth')
torch.save(model.state_dict(), weights_path)
categories = models.VGG16_Weights.IMAGENET1K_V1.meta['categories']

# 2. Upload it with its labels; a model without a built-in architecture sends its
#    TorchScript template along.
with ModelServerClient(args.target, admin_token=args.token, timeout=300) as client:
    extra = {'architecture': 'vgg16'} if args.arch == 'vgg16' else {}
    if args.arch != 'vgg16':
        template = os.path.join(args.workdir, 'architecture.pt')
        torch.jit.script(model).save(template)
        extra = {'architecture_file': template}
    version = client.upload(name, weights_path, labels=categories, **extra)
    client.load(name, version)
    print(f'uploaded {name} version {version} and loaded it')

    # 3. Predict an image: the server decodes and preprocesses it (ImageNet recipe).
    pred = client.predict_images(name, args.image, top_k=5)
    for index, probability, label in pred.top_k[0]:
        print(f'  {label} ({probability:.4f})')

# 4. The same in PyTorch, after model.eval(), as the tutorial does.
model.eval()
preprocess = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
image = ImageOps.exif_transpose(Image.open(args.image)).convert('RGB')
with torch.no_grad():
    ref = model(preprocess(image).unsqueeze(0)).numpy()
err = float(np.linalg.norm(pred.output - ref) / np.linalg.norm(ref))
top1 = categories[int(ref.argmax())]
print(f'PyTorch top-1: {top1}; server vs PyTorch relative L2 {err:.2e}')
if err <= 0.01:
    print('the server matches PyTorch')
else:
    raise SystemExit('the server differs from PyTorch')
