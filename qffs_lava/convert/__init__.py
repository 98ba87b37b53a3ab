"""Quantized ANN -> integer QFFS network: the conversion rule, shared by the trainer and the exporter.

    plan.py      the export rule: which SNN layers a model's graph becomes
    integer.py   the integers each neuron layer holds (the grid): the integer network of a model, in torch,
                 which the trainer's hardware-exact phase trains and the exporter writes
    network.py   convert: a model file's content -> that network, with what net.h5 records about it

The exporter (export/: net.h5 and its fidelity report, qffs-export) is built on this layer; nothing here
imports it.
"""
