"""The model family: MobileNetV3 trunks, landmark CNN, patch sampler, part fViT, CNN student, heads."""
from .cnn_student import MobileFaceNet
from .heads import ArcFace, CosFace, DINOHead, MarginHead, margin_logits
from .landmark_cnn import LandmarkCNN
from .mobilenetv3 import MobileNetV3Trunk, mobilenet_v3_large, mobilenet_v3_small
from .part_vit import PartViT, set_fused_attention
from .registry import (count_flops, count_parameters, create_model, list_models, load_model,
                       model_config, model_description, read_checkpoint, save_checkpoint)
from .sampler import sample_patches, sample_patches_reference

__all__ = [
    "ArcFace", "CosFace", "DINOHead", "LandmarkCNN", "MarginHead", "MobileFaceNet",
    "MobileNetV3Trunk", "PartViT", "count_flops", "count_parameters", "create_model",
    "list_models", "load_model", "margin_logits", "mobilenet_v3_large", "mobilenet_v3_small",
    "model_config", "model_description", "read_checkpoint", "sample_patches",
    "sample_patches_reference", "save_checkpoint", "set_fused_attention",
]
