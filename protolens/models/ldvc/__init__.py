"""LDVC (Language-Driven Visual Consensus, arXiv 2403.08426): frozen open_clip towers, a text adapter, a local
consensus transformer decoder with route attention (BiFormer, arXiv 2303.08810), focal + Dice loss.

:mod:`.route_attention`, :mod:`.decoder`, :mod:`.model`, :mod:`.losses`."""

from protolens.models.ldvc.decoder import LocalConsensusDecoder, TextAdapter
from protolens.models.ldvc.losses import dice_loss, focal_loss, ldvc_loss
from protolens.models.ldvc.model import LDVC, LDVCConfig, ldvc_image_tensor, tiny_clip, tiny_ldvc
from protolens.models.ldvc.route_attention import RouteAttention, full_attention

__all__ = ["LDVC", "LDVCConfig", "LocalConsensusDecoder", "RouteAttention", "TextAdapter", "dice_loss",
           "focal_loss", "full_attention", "ldvc_image_tensor", "ldvc_loss", "tiny_clip", "tiny_ldvc"]
