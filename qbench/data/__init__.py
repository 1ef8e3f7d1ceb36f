"""Datasets: find the files (torchvision's layout or an image folder), decode small datasets once into a
uint8 tensor cache, and serve batches from device memory with batched augmentation."""
from qbench.data.loader import Data, build_data
from qbench.data.sources import LAYOUTS, load_split, locate

__all__ = ["Data", "LAYOUTS", "build_data", "load_split", "locate"]
