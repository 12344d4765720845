"""Data readers every training stage uses: image folders, landmark lists, RecordIO, WebDataset, k-shot lists."""
from lafs_edge.train.data.folders import (LabelledFolder, UnlabelledFolder, read_list_file,
                                          scan_images, scan_labelled, to_112, write_list_file)

__all__ = ["LabelledFolder", "UnlabelledFolder", "read_list_file", "scan_images", "scan_labelled",
           "to_112", "write_list_file"]
