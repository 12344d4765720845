"""The model family: MobileNetV3 trunks, landmark CNN, patch sampler, part fViT, CNN student, heads."""
from lafs_edge.models.base import FaceModel
from lafs_edge.models.cnn_student import MobileFaceNet
from lafs_edge.models.heads import ArcFace, CosFace, DINOHead, MarginHead, margin_logits
from lafs_edge.models.landmark_cnn import LandmarkCNN
from lafs_edge.models.mobilenetv3 import MobileNetV3Trunk, mobilenet_v3_large, mobilenet_v3_small
from lafs_edge.models.part_vit import PartViT, set_fused_attention
from lafs_edge.models.registry import (checkpoint_threshold, count_flops, count_parameters,
                                       create_model, list_models, load_model, model_config,
                                       model_description, read_checkpoint, save_checkpoint)
from lafs_edge.models.sampler import sample_patches, sample_patches_reference

__all__ = [
    "ArcFace", "CosFace", "DINOHead", "FaceModel", "LandmarkCNN", "MarginHead", "MobileFaceNet",
    "MobileNetV3Trunk", "PartViT", "checkpoint_threshold", "count_flops", "count_parameters", "create_model",
    "list_models", "load_model", "margin_logits", "mobilenet_v3_large", "mobilenet_v3_small",
    "model_config", "model_description", "read_checkpoint", "sample_patches",
    "sample_patches_reference", "save_checkpoint", "set_fused_attention",
]
