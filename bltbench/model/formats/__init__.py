"""One module per checkpoint folder format (bltbench, official BLT, transformers), all read through
`common`'s one-tensor-at-a-time loading; `bltbench.model.checkpoint.load_model` detects which."""
