"""Instruction routing (LCIA's parameter allocation): embedders compare instructions, a codebook holds
each parameter group's instructions, a router picks each test sample's group, and
``InstructionRouter`` is the part methods hold."""
from mmcit.routing.codebook import RULES, Codebook, accepts
from mmcit.routing.component import InstructionRouter, RouterSettings
from mmcit.routing.embedders import EMBEDDERS, build_embedder
from mmcit.routing.router import ROUTING_MODES, Decision, Router

__all__ = ["Codebook", "Decision", "EMBEDDERS", "InstructionRouter", "ROUTING_MODES", "RULES", "Router",
           "RouterSettings", "accepts", "build_embedder"]
