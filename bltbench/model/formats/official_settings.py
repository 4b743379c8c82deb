"""Every setting an official BLT checkpoint can hold, and what bltbench does with it.

The official `params.json` is a dump of the official `TrainArgs` (and an entropy model's of its
`LMTransformerArgs`); Hub folders hold the model arguments in `config.json`. Each field is one of:

- mapped: it changes inference and is read into bltbench's config, as the official code reads it;
- checked: it changes inference and bltbench computes some of its values (`runs`): a checkpoint
  holding any other value is refused in one line naming the setting;
- irrelevant: it has no effect on inference (training, logging, initialisation, parallelism, a field
  nothing reads), with the reason and where the official code uses it.

A missing key means the official class default, as the official code reads it. Whole training-only
sections are listed once in SECTIONS. Classified against facebookresearch/blt at 9774ed4; file:line
references are to that tree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VOCAB = 260  # BLT byte ids: 4 specials + 256 bytes
OFFICIAL_EOS = 2


@dataclass(frozen=True)
class Setting:
    kind: str  # "mapped" | "checked" | "irrelevant"
    default: Any  # the official class default: what a missing key means
    note: str  # mapped: what it becomes; checked: the values bltbench runs; irrelevant: why

    def describe(self) -> str:
        return {"mapped": "honoured: ", "checked": "honoured when ", "irrelevant": "irrelevant to inference: "}[self.kind] + self.note


SETTINGS: dict[str, Setting] = {
    'model.dim': Setting('irrelevant', 512,
        'Top-level dim is replaced per component: global dim=dim_global (blt.py:582), locals dim_local_* '
        '(blt.py:600,643); otherwise only stored (blt.py:809) and used for the FLOP estimate '
        '(train.py:556-558)'),
    'model.n_layers': Setting('irrelevant', 8,
        'Replaced by n_layers_global (blt.py:583) / n_layers_local_* (blt.py:601,644); else only FLOP '
        'estimate (train.py:557)'),
    'model.head_dim': Setting('checked', None,
        'null, or equal to dim_local/n_heads_local AND dim_global/n_heads_global'),
    'model.n_heads': Setting('irrelevant', 8,
        'Replaced by n_heads_global (blt.py:584) and n_heads_local_encoder/decoder (blt.py:602,645)'),
    'model.n_kv_heads': Setting('checked', None,
        'null or == n_heads_local_encoder'),
    'model.ffn_dim_multiplier': Setting('mapped', 1.0,
        'ffn_local, ffn_global (the official FFN width rounding)'),
    'model.multiple_of': Setting('mapped', 256,
        'ffn_local, ffn_global'),
    'model.norm_eps': Setting('mapped', 1e-05,
        'norm_eps'),
    'model.rope_theta': Setting('mapped', 10000.0,
        'rope_theta'),
    'model.rope_use_fp32_in_outer_product': Setting('irrelevant', False,
        'base_transformer.py:116-119 casts the int64 positions to fp32 before torch.outer, but '
        'torch.outer(int64, float32) already promotes to float32: tables verified bit-identical (head dims '
        '64/128, up...'),
    'model.init_base_std': Setting('irrelevant', None,
        'Only init_weights (base_transformer.py:586,620-630; blt.py:810,1051-); never called when loading '
        '(generate.py:407-418 builds then load_state_dict)'),
    'model.init_std_factor': Setting('irrelevant', 'disabled',
        'Only init_weights depth factors (base_transformer.py:589,622-630; local_models.py:75,159-167; '
        'blt.py:811)'),
    'model.max_seqlen': Setting('irrelevant', 1024,
        "a length limit only: the global model's rotary table ends there (official "
        'base_transformer.py:143-148), so the official code fails on a request with more patches; within it '
        'the logits are unaffected (bltbench does not stop longer requests)'),
    'model.attn_impl': Setting('mapped', 'sdpa',
        'local_window, eos_documents_local, eos_documents_global (the official masks)'),
    'model.attn_bias_type': Setting('mapped', 'causal',
        'eos_documents_global'),
    'model.eos_id': Setting('checked', 2,
        '2 (the BLT EOS id, where the official masks split documents)'),
    'model.seed': Setting('irrelevant', 42,
        'Init RNG only (train.py:301)'),
    'model.vocab_size': Setting('checked', -1,
        'vocab_size + pm_size == 260'),
    'model.weight_tying': Setting('irrelevant', False,
        'Stored (blt.py:798), never used by the BLT'),
    'model.patch_in_forward': Setting('irrelevant', False,
        'Builds an internal Patcher (blt.py:864-874) used only when forward gets no patch_lengths '
        '(blt.py:908-916); generate_nocache always passes them (generate_blt.py:131-132), as does eval PPL...'),
    'model.dim_token': Setting('checked', None,
        'null with use_local_encoder_transformer true, or == dim_local_encoder (== dim_local_decoder)'),
    'model.dim_global': Setting('mapped', 512,
        'd_global'),
    'model.dim_local_decoder': Setting('checked', 512,
        '== dim_local_encoder'),
    'model.dim_local_encoder': Setting('mapped', 512,
        'd_local'),
    'model.n_layers_global': Setting('mapped', 8,
        'n_layers_global'),
    'model.n_layers_local_decoder': Setting('mapped', 8,
        'n_layers_decoder'),
    'model.n_layers_local_encoder': Setting('mapped', 8,
        'n_layers_encoder'),
    'model.patch_size': Setting('irrelevant', None,
        "read only with patching_mode '' (refused) and by the in-forward patcher generation never runs "
        '(official blt.py:864-874, 898-905)'),
    'model.patching_mode': Setting('checked', None,
        "!= '' (any non-empty string)"),
    'model.patching_threshold': Setting('irrelevant', None,
        'Never reaches a Patcher: stored (blt.py:808) and passed as PatcherArgs(patching_threshold=...) '
        '(blt.py:869), which is not a PatcherArgs field; PatcherArgs is a plain pydantic BaseModel...'),
    'model.patching_threshold_add': Setting('irrelevant', None,
        'Same as patching_threshold: PatcherArgs(patching_threshold_add=...) (blt.py:870) is a dropped extra '
        'key; inference uses data.patcher_args.threshold_add'),
    'model.monotonicity': Setting('irrelevant', False,
        'Only the internal patch_in_forward Patcher (blt.py:871); inference uses '
        'data.patcher_args.monotonicity (patcher.py:503,580)'),
    'model.patching_batch_size': Setting('irrelevant', 1,
        'Never read (not passed to the internal PatcherArgs, blt.py:866-873)'),
    'model.patching_device': Setting('irrelevant', 'cuda',
        'Never read (not passed to the internal PatcherArgs, blt.py:866-873)'),
    'model.max_patch_length': Setting('irrelevant', None,
        'Only the internal patch_in_forward Patcher (blt.py:872); inference uses '
        'data.patcher_args.max_patch_length (patcher.py:499,618-628)'),
    'model.tie_local_encoder_decoder_logits': Setting('irrelevant', False,
        'never read (grep of bytelatent/)'),
    'model.use_local_encoder_transformer': Setting('checked', False,
        'true, or dim_token == dim_local_encoder'),
    'model.encoder_lm_loss': Setting('irrelevant', False,
        'never read'),
    'model.max_encoder_seq_length': Setting('mapped', None,
        'max_seqlen'),
    'model.pad_to_max_length': Setting('irrelevant', False,
        'model-level field never read (data.pad_to_max_length is the one used, args.py:212)'),
    'model.encoder_enable_byte_ngrams': Setting('checked', False,
        'false'),
    'model.encoder_enable_byte_group_hash': Setting('irrelevant', False,
        'never read: hash embeddings exist iff encoder_hash_byte_group_size is not None '
        '(blt.py:694-698,748-749)'),
    'model.ngram_vocab_sizes': Setting('irrelevant', None,
        'Only asserted non-null when byte n-grams are enabled (blt.py:850); data/ngram_processor.py:125 is '
        'data-side'),
    'model.cross_attn_encoder': Setting('checked', False,
        'true'),
    'model.cross_attn_decoder': Setting('checked', False,
        'true'),
    'model.cross_attn_window_encoder': Setting('mapped', None,
        'cross_attn_window_encoder'),
    'model.cross_attn_window_decoder': Setting('mapped', None,
        'cross_attn_window_decoder'),
    'model.cross_attn_k': Setting('mapped', None,
        'cross_attn_k'),
    'model.cross_attn_nheads': Setting('mapped', None,
        'cross_attn_heads'),
    'model.cross_attn_all_layers_decoder': Setting('checked', False,
        'true'),
    'model.cross_attn_all_layers_encoder': Setting('checked', False,
        'false, or n_layers_local_encoder <= 1'),
    'model.cross_attn_use_flex_attention': Setting('checked', True,
        'true (false cannot run officially)'),
    'model.cross_attn_init_by_pooling': Setting('checked', False,
        'true'),
    'model.encoder_hash_byte_group_size': Setting('mapped', None,
        'hash_sizes'),
    'model.encoder_hash_byte_group_vocab': Setting('mapped', 30000,
        'hash_buckets'),
    'model.encoder_hash_byte_group_nb_functions': Setting('mapped', 3,
        'hash_functions'),
    'model.log_patch_lengths': Setting('irrelevant', False,
        'never read'),
    'model.non_linearity': Setting('irrelevant', 'swiglu',
        'never read (FeedForward is always SwiGLU, base_transformer.py:484-489)'),
    'model.use_rope': Setting('checked', True,
        'true'),
    'model.recompute_fc1_out': Setting('irrelevant', False,
        'never read (activation-checkpointing/backward knob)'),
    'model.recompute_fc3_out': Setting('irrelevant', False,
        'never read (activation-checkpointing/backward knob)'),
    'model.custom_bwd': Setting('irrelevant', False,
        'never read (activation-checkpointing/backward knob)'),
    'model.recompute_attn': Setting('irrelevant', True,
        'never read'),
    'model.layer_ckpt': Setting('irrelevant', 'all',
        'never read'),
    'model.init_use_gaussian': Setting('irrelevant', True,
        'never read'),
    'model.init_use_depth': Setting('irrelevant', 'current',
        'never read'),
    'model.alpha_depth': Setting('irrelevant', 'disabled',
        'never read'),
    'model.max_length': Setting('irrelevant', 2048,
        'Only for learned positional embeddings when use_rope is false (local_models.py:87-88), which '
        'bltbench refuses'),
    'model.norm_affine': Setting('irrelevant', True,
        'never read (always affine nn.RMSNorm/FusedRMSNorm)'),
    'model.pre_norm': Setting('irrelevant', True,
        'never read (TransformerBlock is always pre-norm, base_transformer.py:556-566)'),
    'model.norm_type': Setting('irrelevant', 'rmsnorm',
        'never read as a model arg (norms.py norm_type is gradient-clipping p-norm)'),
    'model.dropout': Setting('irrelevant', 0,
        'F.dropout(training=self.training) (local_models.py:272,383,399; latent_transformer.py:196) and the '
        'model is in eval mode (generate.py:419; generate_blt.py:94; hf.py:173)'),
    'model.output_size': Setting('irrelevant', -1,
        'never read as a model arg (train.py:132-143 uses its own output_size parameter)'),
    'model.architecture': Setting('irrelevant', 'vanilla',
        'never read'),
    'model.share_encoder_decoder_emb': Setting('checked', True,
        'the resulting decoder dim_token_emb == dim_local_decoder (true with use_local_encoder_transformer, '
        'or dim_token null/== d_local when false)'),
    'model.global_local_decoder_residual_layer': Setting('irrelevant', None,
        'never read'),
    'model.tokenize_with_bpe_delimiter': Setting('irrelevant', False,
        "never read (the tokenizer's bpe_delim init kwarg is what matters)"),
    'model.patching_thresholds_str': Setting('irrelevant', None,
        'never read'),
    'model.tie_local_encoder_decoder': Setting('irrelevant', False,
        'never read'),
    'model.encoder_preds_low_entropy_toks': Setting('irrelevant', None,
        'never read'),
    'model.encoder_preds_random_toks': Setting('irrelevant', None,
        'never read'),
    'model.dim_token_emb': Setting('irrelevant', None,
        'Overwritten for every component (blt.py:587,603,646)'),
    'model.dim_patch_emb': Setting('irrelevant', None,
        'Overwritten for every component (blt.py:588,604,647)'),
    'model.encoder_ngram_table_dir': Setting('irrelevant', None,
        'never read'),
    'model.encoder_ngram_to_size_str': Setting('irrelevant', None,
        'Without encoder_enable_byte_ngrams the tables built by init_embeddings are discarded '
        "(blt.py:839-847); with it, covered by that field's refusal (blt.py:851-858)"),
    'model.entropy_model_checkpoint_dir': Setting('irrelevant', None,
        'model-level field never read (PatcherArgs has its own, overridden at generation: '
        'generate_blt.py:192)'),
    'model.entropy_model_is_ngram_model': Setting('irrelevant', False,
        'never read'),
    'model.downsampling_by_pooling': Setting('checked', None,
        "'max' (any string whose only pooling substring is 'max')"),
    'model.n_heads_global': Setting('mapped', 8,
        'n_heads_global'),
    'model.n_heads_local_decoder': Setting('checked', 8,
        '== n_heads_local_encoder'),
    'model.n_heads_local_encoder': Setting('mapped', 8,
        'n_heads_local'),
    'model.n_kv_heads_global': Setting('checked', None,
        'null or == n_heads_global'),
    'model.conv_kernel_size': Setting('irrelevant', None,
        'never read'),
    'model.local_attention_window_len': Setting('mapped', None,
        'local_window'),
    'model.sequence_parallel': Setting('irrelevant', False,
        'never read'),
    'model.loss_parallel': Setting('irrelevant', False,
        'never read'),
    'model.fuse_sequence_parallel': Setting('irrelevant', False,
        'never read'),
    'model.use_fsdp': Setting('irrelevant', True,
        'never read'),
    'model.attn_to_keep': Setting('irrelevant', 'all',
        'never read'),
    'model.pm_size': Setting('checked', 0,
        '0 (with vocab_size 260)'),
    'model.full_logging_n_layers': Setting('irrelevant', 4,
        'never read'),
    'entropy_model.dim': Setting('mapped', 512,
        'entropy.dim'),
    'entropy_model.n_layers': Setting('mapped', 8,
        'entropy.n_layers'),
    'entropy_model.n_heads': Setting('mapped', None,
        'entropy.n_heads'),
    'entropy_model.head_dim': Setting('checked', None,
        'null or dim/n_heads'),
    'entropy_model.n_kv_heads': Setting('checked', None,
        'null or == n_heads'),
    'entropy_model.ffn_dim_multiplier': Setting('mapped', None,
        'entropy.ffn_dim'),
    'entropy_model.multiple_of': Setting('mapped', 256,
        'entropy.ffn_dim'),
    'entropy_model.norm_eps': Setting('mapped', 1e-05,
        'entropy.norm_eps'),
    'entropy_model.rope_theta': Setting('mapped', 10000.0,
        'entropy.rope_theta'),
    'entropy_model.rope_use_fp32_in_outer_product': Setting('irrelevant', False,
        'NOT read | Hub: read, but numerically a no-op (see model.rope_use_fp32_in_outer_product; '
        'base_transformer.py:116-119)'),
    'entropy_model.init_base_std': Setting('irrelevant', None,
        'NOT read | Hub: init only'),
    'entropy_model.init_std_factor': Setting('irrelevant', 'disabled',
        'NOT read | Hub: init only'),
    'entropy_model.max_seqlen': Setting('checked', 1024,
        '>= 8192'),
    'entropy_model.attn_impl': Setting('mapped', 'sdpa',
        'entropy.window, entropy.eos_documents'),
    'entropy_model.attn_bias_type': Setting('mapped', None,
        'entropy.window, entropy.eos_documents'),
    'entropy_model.eos_id': Setting('checked', 2,
        '== 2'),
    'entropy_model.seed': Setting('irrelevant', 42,
        'NOT read | Hub: init only (transformer.py:56)'),
    'entropy_model.vocab_size': Setting('checked', -1,
        '== 260'),
    'entropy_model.weight_tying': Setting('irrelevant', False,
        'NOT read -> False | Hub: True crashes at construction: self.embeddings does not exist '
        '(transformer.py:97-98)'),
    'entropy_model.sliding_window': Setting('mapped', None,
        'entropy.window'),
    'data.patcher_args.patching_mode': Setting('checked', 'entropy',
        "'entropy' (or 'static' with patch_size 1)"),
    'data.patcher_args.patching_device': Setting('irrelevant', 'cuda',
        'Entropy-model placement only (patcher.py:493; hf.py:179-181)'),
    'data.patcher_args.entropy_model_checkpoint_dir': Setting('irrelevant', None,
        'Overridden at generation by eval_args.entropy_ckpt_dir (generate_blt.py:192); Hub path attaches its '
        'own model (hf.py:179-181)'),
    'data.patcher_args.realtime_patching': Setting('irrelevant', False,
        'Forced True at generation (generate_blt.py:191; hf.py:178); generate_nocache asserts it '
        '(generate_blt.py:91-93)'),
    'data.patcher_args.threshold': Setting('mapped', 1.335442066192627,
        'patching.threshold'),
    'data.patcher_args.threshold_add': Setting('mapped', None,
        'patching.threshold_add'),
    'data.patcher_args.max_patch_length': Setting('mapped', None,
        'patching.max_patch_length'),
    'data.patcher_args.patch_size': Setting('checked', 4.5,
        'entropy mode (no effect), or 1 with static patching'),
    'data.patcher_args.patching_batch_size': Setting('irrelevant', 1,
        'Only how many 8192-long rows go into one entropy-model call (patcher.py:84-92); rows are '
        'independent, results identical'),
    'data.patcher_args.device': Setting('irrelevant', 'cuda',
        'Device the 8192-rows are moved to (patcher.py:93-94,569)'),
    'data.patcher_args.monotonicity': Setting('mapped', False,
        'patching.monotonic'),
    'data.patcher_args.log_time': Setting('irrelevant', False,
        'Timing logs only (patcher.py:504-506,557-589,642-644)'),
    'data.tokenizer_args.name': Setting('checked', 'bytes',
        "'blt'"),
    'data.tokenizer_args.init_kwargs': Setting('checked', None,
        'null (the BLT tokenizer\'s defaults) or keyword arguments, each classified below'),
    'data.tokenizer_args.init_kwargs.add_bos': Setting('checked', True,
        'true (or init_kwargs null)'),
    'data.tokenizer_args.init_kwargs.bpe_delim': Setting('checked', False,
        'false'),
    'data.tokenizer_args.init_kwargs.add_eos': Setting('irrelevant', True,
        'Generation passes add_eos=False explicitly (generate_blt.py:100)'),
    'data.tokenizer_args.init_kwargs.vocab_size_unit_1': Setting('irrelevant', 256,
        'Only n_words (blt_tokenizer.py:100-102); encode/decode ignore it'),
    'data.tokenizer_args.init_kwargs.bpe_tokenizer_path': Setting('irrelevant', '/home/artidoro/tokenizers/llama_v2.tokenizer.model',
        'Only with bpe_delim (blt_tokenizer.py:92-96)'),
    'data.s3_profile': Setting('irrelevant', None,
        'Training data pipeline (args.py:155-229)'),
    'data.root_dir': Setting('irrelevant', None,
        'Training data pipeline (args.py:155-229)'),
    'data.sources': Setting('irrelevant', {},
        'Training data pipeline (args.py:155-229)'),
    'data.batch_size': Setting('irrelevant', 2,
        'Training data pipeline (args.py:155-229)'),
    'data.seq_len': Setting('irrelevant', 2048,
        "Training data pipeline (args.py:159,209-213,180) and the official PPL eval's batching "
        '(eval.py:223-253; train.py:159-162 copies seq_len into model.max_seqlen) — not the model'),
    'data.seed': Setting('irrelevant', 42,
        'Training data pipeline (args.py:155-229)'),
    'data.add_bos': Setting('irrelevant', True,
        'never read (DataloaderArgs field only, args.py:133-134; BOS/EOS come from tokenizer init_kwargs)'),
    'data.add_eos': Setting('irrelevant', True,
        'never read (DataloaderArgs field only, args.py:133-134; BOS/EOS come from tokenizer init_kwargs)'),
    'data.load_async': Setting('irrelevant', True,
        'Training data pipeline (args.py:155-229)'),
    'data.async_persist_type': Setting('irrelevant', 'exact',
        'Training data pipeline (args.py:155-229)'),
    'data.prefetch_size': Setting('irrelevant', 64,
        'Training data pipeline (args.py:155-229)'),
    'data.preprocess_dir': Setting('irrelevant', None,
        'Training data pipeline (args.py:155-229)'),
    'data.dataset_files': Setting('irrelevant', None,
        'Training data pipeline (args.py:155-229)'),
    'data.entropy_model_name': Setting('irrelevant', 'transformer_100m',
        'Training data pipeline (args.py:155-229)'),
    'data.arrow_batch_size': Setting('irrelevant', 20,
        'Training data pipeline (args.py:155-229)'),
    'data.buffer_size': Setting('irrelevant', 64,
        'Training data pipeline (args.py:155-229)'),
    'data.file_format': Setting('irrelevant', 'arrow',
        'Training data pipeline (args.py:155-229)'),
    'data.pad_to_max_length': Setting('irrelevant', True,
        'Training data pipeline (args.py:155-229)'),
    'data.max_encoder_seq_length': Setting('irrelevant', 12288,
        "Training data pipeline (args.py:159,209-213,180) and the official PPL eval's batching "
        '(eval.py:223-253; train.py:159-162 copies seq_len into model.max_seqlen) — not the model'),
    'data.enable_byte_ngrams': Setting('irrelevant', False,
        'Training data pipeline (args.py:155-229)'),
    'data.add_patches': Setting('irrelevant', True,
        "Training data pipeline (args.py:159,209-213,180) and the official PPL eval's batching "
        '(eval.py:223-253; train.py:159-162 copies seq_len into model.max_seqlen) — not the model'),
    'distributed.model_dtype': Setting('irrelevant', 'bf16',
        'precision is --dtype\'s: bltbench runs what it is asked for; the official loader casts the BLT to '
        'model_dtype (generate.py:412-421) and runs a consolidated entropy model in bf16 (entropy_model.py:17), '
        'which --dtype bf16 reproduces; inspect shows it'),
}

SECTIONS: dict[str, str] = {
    'optim':
        'Training only: build_optimizer(model, args.optim, args.steps) (train.py:318; optim.py:14,146).',
    'distributed':
        'Parallelism/compile/FSDP/float8 for training (train.py:240-277). generate_blt.py:166-169 and '
        'hf.py:184-187 call setup_torch_distributed with a FRESH DistributedArgs(), so the dumped '
        'matmul_allow_tf32 etc. are not...',
    'env':
        'Environment variables for training jobs only: setup_env(args.env) (train.py:239; '
        'distributed.py:270).',
    'checkpoint':
        'Checkpoint saving/consolidation during training (train.py:147-149,290-296,330; checkpoint.py:49).',
    'profiling':
        'Training profiler (train.py:170-173,359; profiling.py:19).',
    'logging':
        'Training metrics/wandb (train.py:175-176,353; metrics.py:48).',
    'eval':
        'In-training evaluation scheduling (train.py:688-714); generate_blt/eval take their own CLI EvalArgs '
        '(generate_blt.py:204; eval.py), not this section.',
    'train_entropy_model':
        'Selects which model load_consolidated_model_and_tokenizer builds (generate.py:405-410): must be '
        "false for a BLT folder (an entropy-only folder's default 'model' section would otherwise be loaded "
        'by bltbench and...',
    'name':
        'Run name for logs/wandb (train.py:176,242).',
    'dump_dir':
        'Output directory for training (train.py:145,229-237).',
    'seed':
        'Training RNG (train.py:256).',
    'debug_dynamo':
        'torch._dynamo debugging in training (train.py:804).',
    'grad_acc_steps':
        'Gradient accumulation (train.py:372-374,483).',
    'gc_collect_freq':
        'Python GC cadence in training (train.py:419).',
    'probe_freq':
        'Training probe (train.py:178-183,333-346,440-441).',
    'steps':
        'Training steps (train.py:318,369).',
    'max_steps':
        'Training halt (train.py:369-370).',
    'async_eval_gpus':
        'In-training async eval launch (train.py:701-714).',
    'eval_on_gpus':
        'never read outside TrainArgs (args.py:336).',
}


def _encoder_token_dim(m: dict[str, Any]) -> int | None:
    """The official encoder byte-embedding width (get_encoder_dim_token_emb)."""
    if m["dim_token"] is not None:
        return m["dim_token"]
    if m["use_local_encoder_transformer"]:
        return m["dim_local_encoder"]
    return m["dim_global"] // m["patch_size"] if m["patch_size"] else None


def _decoder_token_dim(m: dict[str, Any]) -> int | None:
    if m["share_encoder_decoder_emb"]:
        return _encoder_token_dim(m)
    return m["dim_token"] if m["dim_token"] is not None else m["dim_local_decoder"]


def _poolings(value: Any) -> list[str]:
    return [p for p in ("avg", "mean", "min", "max") if isinstance(value, str) and p in value]


# For each checked setting: whether a value (its section, defaults filled in, beside it) is one bltbench computes.
RUNS: dict[str, Callable[[Any, dict[str, Any]], bool]] = {
    "model.head_dim": lambda v, m: v is None or (v == m["dim_local_encoder"] // m["n_heads_local_encoder"]
                                                 and v == m["dim_global"] // m["n_heads_global"]),
    "model.n_kv_heads": lambda v, m: v is None or v == m["n_heads_local_encoder"],
    "model.eos_id": lambda v, m: v == OFFICIAL_EOS,
    "model.vocab_size": lambda v, m: v == VOCAB,
    "model.dim_token": lambda v, m: _encoder_token_dim(m) == m["dim_local_encoder"],
    "model.use_local_encoder_transformer": lambda v, m: _encoder_token_dim(m) == m["dim_local_encoder"],
    "model.share_encoder_decoder_emb": lambda v, m: _decoder_token_dim(m) == m["dim_local_decoder"],
    "model.dim_local_decoder": lambda v, m: v == m["dim_local_encoder"],
    "model.patching_mode": lambda v, m: v != "",
    "model.encoder_enable_byte_ngrams": lambda v, m: v is False,
    "model.cross_attn_encoder": lambda v, m: v is True,
    "model.cross_attn_decoder": lambda v, m: v is True,
    "model.cross_attn_all_layers_decoder": lambda v, m: v is True,
    "model.cross_attn_all_layers_encoder": lambda v, m: v is False or m["n_layers_local_encoder"] <= 1,
    "model.cross_attn_use_flex_attention": lambda v, m: v is True,
    "model.cross_attn_init_by_pooling": lambda v, m: v is True,
    "model.use_rope": lambda v, m: v is True,
    "model.downsampling_by_pooling": lambda v, m: _poolings(v) == ["max"],
    "model.n_heads_local_decoder": lambda v, m: v == m["n_heads_local_encoder"],
    "model.n_kv_heads_global": lambda v, m: v is None or v == m["n_heads_global"],
    "model.pm_size": lambda v, m: v == 0,
    "entropy_model.head_dim": lambda v, e: v is None or v == e["dim"] // e["n_heads"],
    "entropy_model.n_kv_heads": lambda v, e: v is None or v == e["n_heads"],
    "entropy_model.max_seqlen": lambda v, e: isinstance(v, int) and v >= 8192,
    "entropy_model.eos_id": lambda v, e: v == OFFICIAL_EOS,
    "entropy_model.vocab_size": lambda v, e: v == VOCAB,
    "data.patcher_args.patching_mode": lambda v, p: v == "entropy" or (v == "static" and p["patch_size"] == 1),
    "data.patcher_args.patch_size": lambda v, p: p["patching_mode"] != "static" or v == 1,
    "data.tokenizer_args.name": lambda v, t: v == "blt",
    "data.tokenizer_args.init_kwargs": lambda v, t: v is None or isinstance(v, dict),
    "data.tokenizer_args.init_kwargs.add_bos": lambda v, k: v is True,
    "data.tokenizer_args.init_kwargs.bpe_delim": lambda v, k: v is False,
}

# What the consolidated entropy loader (load_entropy_model) reads of its params; a Hub config reads all.
CONSOLIDATED_ENTROPY_READS = ("dim", "n_layers", "n_heads", "ffn_dim_multiplier", "max_seqlen", "vocab_size")


def show(value: Any) -> str:
    return json.dumps(value, default=str)


def with_defaults(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """A section's values, every missing field at its official default (keys are the field names)."""
    prefix = section + "."
    filled = {path[len(prefix):]: s.default for path, s in SETTINGS.items()
              if path.startswith(prefix) and "." not in path[len(prefix):]}
    return {**filled, **values}


def unknown_fields(section: str, values: dict[str, Any]) -> list[str]:
    return sorted(k for k in values if f"{section}.{k}" not in SETTINGS and not isinstance(values[k], dict))


def refusals(section: str, values: dict[str, Any], read: Callable[[str], bool] = lambda key: True) -> list[str]:
    """Why bltbench cannot run these settings of `section` (model, entropy_model, data.patcher_args,
    data.tokenizer_args, data.tokenizer_args.init_kwargs): unknown fields, and checked ones at a value
    bltbench does not compute. `read` says which fields the official loader reads at all."""
    found = [f"{section}.{key} (a setting the official code at 9774ed4 does not define)"
             for key in unknown_fields(section, values)]
    filled = with_defaults(section, values)
    for path, runs in RUNS.items():
        head, _, key = path.rpartition(".")
        if head == section and read(key) and not _runs(runs, filled[key], filled):
            found.append(f"{path}: {show(filled[key])} (bltbench runs {SETTINGS[path].note})")
    return found


def _runs(runs: Callable[[Any, dict[str, Any]], bool], value: Any, section: dict[str, Any]) -> bool:
    try:
        return bool(runs(value, section))
    except (TypeError, ZeroDivisionError, KeyError):  # a value of the wrong type, or settings beside it missing
        return False


def setting_of(path: str) -> Setting | None:
    """The classification of a dotted params.json path (a field, or anything in a listed section)."""
    if path in SETTINGS:
        return SETTINGS[path]
    top = path.split(".")[0]
    if top in SECTIONS:
        return Setting("irrelevant", None, SECTIONS[top])
    return None


def leaves(values: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf of a nested params.json as (dotted path, value); a classified dict-valued field
    (tokenizer init_kwargs, data sources) counts as one leaf unless its fields are listed."""
    if isinstance(values, dict) and (not prefix or prefix[:-1] not in SETTINGS
                                     or any(p.startswith(prefix) for p in SETTINGS)):
        return [leaf for key, value in values.items() for leaf in leaves(value, f"{prefix}{key}.")]
    return [(prefix[:-1], values)]


def explain(args: dict[str, Any], entropy_args: dict[str, Any] | None, as_written: bool) -> list[dict[str, Any]]:
    """Every setting an official folder's files hold, with its value and what bltbench does with it
    (what `bltbench inspect` shows). The entropy model's are under `entropy_model.`."""
    rows = []
    # a BLT's own params.json holds no entropy model (null): its settings are the entropy folder's
    items = [(p, v) for p, v in leaves(args) if p != "entropy_model" and not p.startswith("entropy_model.")]
    items += [(f"entropy_model.{p}", v) for p, v in leaves(entropy_args or {})]
    for path, value in items:
        setting = setting_of(path)
        if setting is None:
            kind, note = "unknown", "a setting the official code at 9774ed4 does not define"
        elif (path.startswith("entropy_model.") and not as_written
              and path.split(".", 1)[1] not in CONSOLIDATED_ENTROPY_READS):
            kind, note = "irrelevant", "the official consolidated entropy loader does not read it (load_entropy_model)"
        else:
            kind, note = setting.kind, setting.note
        rows.append({"setting": path, "value": value, "kind": kind, "note": note})
    return rows
