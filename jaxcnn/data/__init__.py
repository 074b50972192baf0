"""The data layer, from disk to the devices:

    sources   which datasets exist, their classes, splits, per-host slices and normalisation
    folders   image folders: train/ with test/ or val/, listed once and the listing cached
    tf_host   streamed: tf.data decodes, augments (tf_ops) and batches this host's slice as uint8
    decoded   device-resident folders: Pillow (pil_ops) decodes a split once, cached on disk
    dali      streamed folders through NVIDIA DALI (loader "dali"), decoded on the GPUs if any
    device    host batches to global arrays; the device-resident split, augmented on the devices
    pipeline  what the training loop calls (re-exported here)
"""
from jaxcnn.data.device import member_sharding
from jaxcnn.data.pipeline import AUGMENTS, eval_batches, steps_per_epoch, train_batches
from jaxcnn.data.sources import DatasetInfo, dataset_info

__all__ = ["AUGMENTS", "DatasetInfo", "dataset_info", "eval_batches", "member_sharding",
           "steps_per_epoch", "train_batches"]
