"""The quantized ANN side: LSQ quantizers, graph models and built-in architectures, datasets,
training and the safe model file.

    lsq.py        learned step size quantization
    models.py     architectures as plain-data graphs, and the torch model that runs one
    archs.py      the built-in architectures (mlp, lenet, vgg11/16, resnet20, resnet8)
    datasets.py   digits, MNIST, Fashion-MNIST, ... as tensors; offline fetching
    train.py      float training, then LSQ fine-tuning (qffs-train)
    modelfile.py  model.pt: save and safe load
"""
