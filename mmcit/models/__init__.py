"""Models: the backends that build a base model (``model.type``), the adapter-carrying wrapper every
method and loop works with (``MMModel``), and the one factory, ``build_model``.

Backends are the modules of this package (``hf_llava``, ``hf_vlm``, ``composed``) and the
``tiny_llava`` subpackage, registered in ``BACKENDS`` under their file names; ``families`` is the
table of what differs between the families ``hf_vlm`` loads.
"""
