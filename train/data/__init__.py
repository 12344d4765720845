"""Data readers the training stages use: image folders and list files, RecordIO, WebDataset,
k-shot lists. The folder scans, the letterbox and 5-point landmark lists are core modules
(`lafs_edge.image_folders`, `lafs_edge.landmark_lists`), shared with export and the device tools."""
from lafs_edge.train.data.folders import (LabelledFolder, UnlabelledFolder, read_list_file,
                                          write_list_file)

__all__ = ["LabelledFolder", "UnlabelledFolder", "read_list_file", "write_list_file"]
