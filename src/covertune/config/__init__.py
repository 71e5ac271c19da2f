"""Options and stage configs.

- ``options``: the option types (a choice option's ``Literal``), ``opt`` and the shared constants (a leaf);
- ``groups``: the option groups several stages share (model source, decoding, candidates), each field and
  its range declared once;
- ``stages``: one config dataclass per stage, composed of the groups (flat flags and YAML keys);
- ``build``: a stage config from preset < YAML < flags, coerced and validated before any model loads.
"""

__all__ = ["options", "groups", "stages", "build"]
