"""CoLeaF on LLP, trained as the authors' code trains it: every value of the run.

    python train.py --config configs/llp.py --config.data.root=/path/to/LLP --workdir runs/llp

``config.data.root`` is required: the folder with vggish/, res152/, r2plus1d_18/
and (unless --config.data.annotation_dir is given) the five AVVP CSVs.

Default: CoLeaF with the CMPAE Anchor and JoMoLD denoising (the paper's best,
Table 5). Options after a colon, comma-separated (the syntax of every file in
configs/): a method, ``coleaf_cmpae`` (default), ``coleaf_han`` (CoLeaF with the
HAN Anchor), ``cmpae`` or ``han`` (the plain Anchors, no Reference); and
``paper`` for the paper's text's recipe where it differs from the authors' code
(BCE Reference loss, Reference correlation teacher, annealed JoMoLD, 15 epochs),
e.g. ``configs/llp.py:paper`` or ``configs/llp.py:coleaf_han,paper``.

Where a value comes from: *official* (the authors' code, faeghehsardari/coleaf at
a36a153, ``main.py`` / ``option.py``, which produced the published numbers),
*paper* (CoLeaF, ECCV 2024, docs/method.md), *HAN* (Tian et al. 2020) or *ours*.
``WORKDIR/config.json`` keeps the effective config of every run.
"""

import ml_collections

from coleaf_jax.config import METHODS, parse_options, set_method, use_paper_recipe


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    options = parse_options(arg, "configs/llp.py", method=METHODS, recipe=("paper",))
    c = ml_collections.ConfigDict()
    c.name = "coleaf_cmpae_llp"  # the run's name in reports and sweeps (ours)
    # 'coleaf': Anchor + Reference with the collaborative losses; 'anchor_only': the
    # plain Anchor, no Reference (the HAN / CMPAE baselines).
    c.method = "coleaf"
    c.seed = 0  # PRNG seed of initialisation, shuffling and dropout (ours)
    c.num_devices = 0  # data-parallel devices (pmap); 0 = all local devices
    c.num_seeds = 1  # K > 1: train seeds seed..seed+K-1 at once (vmap), report mean ± std
    c.num_epochs = 10  # official (the paper's text: 15)
    c.batch_size = 128  # paper; the global batch, split across devices
    c.learning_rate = 5e-4  # official (HAN used 3e-4)
    c.lr_decay_every_epochs = 6  # paper: the learning rate is multiplied by...
    c.lr_decay_factor = 0.25  # ...0.25 every 6 epochs (paper)
    # 'step' (above) or 'warmup_cosine' (VALOR, UWAV: lr_warmup_epochs of linear warm-up,
    # then cosine to lr_min at num_epochs; coleaf_jax/training/step.py:learning_rate).
    c.lr_schedule = "step"  # official
    c.lr_warmup_epochs = 0  # official: no warm-up
    c.lr_min = 0.0  # with warmup_cosine: the last epoch's learning rate
    # 'adam' (official: torch's Adam, no weight decay) or 'adamw' (VALOR, UWAV: decoupled
    # weight decay); grad_clip_norm > 0 clips as torch's clip_grad_norm_ (0: none).
    c.optimizer = "adam"  # official
    c.adam_betas = (0.9, 0.999)  # torch's defaults (official)
    c.adam_eps = 1e-8  # torch's default (official)
    c.weight_decay = 0.0  # official
    c.grad_clip_norm = 0.0  # official
    c.log_every_steps = 10  # training-loss lines and progress-bar updates (ours)
    # Matmul precision of training and evaluation: 'highest' = full float32 (as the authors'
    # torch); 'default' lets a GPU use TF32 / a TPU bfloat16 passes (faster, other numbers).
    c.matmul_precision = "highest"
    # JAX's persistent compilation cache (train.py, eval.py, parse.py, the demo): a second
    # run with the same shapes does not compile again. '' = off.
    c.compilation_cache_dir = "~/.cache/coleaf_jax/xla"
    c.scan_epoch = False  # with data on device: run each epoch as one lax.scan (no per-step bar)
    # Modules imported before the run: your own Anchors and datasets register themselves
    # there (coleaf_jax/registry.py); stored in config.json, so eval.py imports them too.
    c.extensions = ()

    c.data = ml_collections.ConfigDict()
    # A dataset of coleaf_jax/registry.py: 'llp' / 'unav100' (features on disk),
    # 'synthetic' / 'synthetic_unav100' (generated on first use in those layouts).
    c.data.dataset = "llp"
    c.data.root = ""  # feature root (LLP: vggish/, res152/, r2plus1d_18/); required for real data
    c.data.num_classes = 25  # UnAV-100 and synthetic_unav100 only (LLP: the 25 classes)
    c.data.unav_features = "i3d"  # UnAV-100 feature set: 'i3d' (VGGish + I3D) or 'onepeace'
    c.data.unav_overlap = "any"  # UnAV-100 segment truth rule: 'any', 'half' or 'centre'
    c.data.unav_annotation_file = ""  # '' = ROOT/annotations/unav100_annotations.json
    # Variable-length data, host pipeline: crop each batch to a multiple of this many
    # segments holding its longest video (0 = always the split's longest video).
    c.data.bucket = 0
    c.data.annotation_dir = ""  # the five CSVs; '' = data.root
    c.data.tfds_dir = ""  # TFDS cache; '' = the TFDS default (~/tensorflow_datasets)
    # Processes writing the prepared copy (the same files whatever their number);
    # 0 = one per available core, each given at least 1,024 videos.
    c.data.prepare_processes = 0
    # Val/test videos without feature files: False = an error (ours); True = score the
    # others and record the counts (videos_scored, videos_skipped) in every metrics file.
    c.data.allow_missing = False
    # A video listed in two split CSVs (e.g. a test video also in AVVP_train.csv) is an
    # error naming the videos and files; True trains and scores anyway, says so in the log
    # and records the count (videos_also_in_other_splits) in every metrics file.
    c.data.allow_split_overlap = False
    # docs/method.md §9 / paper Table 6: train with VALOR's CLAP/CLIP segment pseudo-labels
    # (ROOT/CLAP/segment_pseudo_labels/<id>.npy, ROOT/CLIP/...): modality labels from them
    # and an extra segment-level BCE on the Anchor (loss.pseudo_label_segment_weight).
    c.data.pseudo_labels = False
    # Splits are held in memory (val and test first, then train) while their features fit in
    # this many GiB together; a larger split is read from its prepared array_record files
    # batch by batch, a background thread reading ahead (bounded memory on the full LLP).
    c.data.resident_max_gib = 4.0
    c.data.on_device = True  # keep the training split on the device(s), gather batches there
    c.data.on_device_max_gib = 8.0  # ...when its arrays take at most this much (per device)
    c.data.synthetic_videos = 1000  # synthetic datasets only: how many videos in all
    c.data.synthetic_seed = 0  # synthetic datasets only: the generator's seed

    c.model = ml_collections.ConfigDict()
    # An Anchor of coleaf_jax/registry.py: 'han' (docs/method.md §4.1-4.2) or 'cmpae'
    # (§4.3, Appendix A).
    c.model.anchor = "cmpae"
    c.model.class_tokens = True  # Reference class tokens (paper)
    c.model.d_model = 512  # paper
    c.model.ffn_dim = 512  # HAN
    c.model.dropout = 0.1  # HAN
    # The HAN Anchor's layers (docs/method.md §4.1): HAN's are 1 head, 1 layer, both
    # streams updated from the layer's inputs ('parallel'); the VALOR family (configs/
    # valor.py) has 8 heads, 1 or 4 layers, the visual stream updated from the updated
    # audio stream ('audio_first'). The CMPAE Anchor takes HAN's only.
    c.model.num_heads = 1  # HAN
    c.model.num_layers = 1  # HAN
    c.model.update_order = "parallel"  # HAN
    c.model.reference_head_dropout = 0.5  # paper §5
    # The visual Reference's temporal attention FC_time reads the head-dropped features, as
    # the authors' Self_Video_Net (their audio encoder reads the un-dropped ones).
    c.model.reference_visual_time_reads_dropped = True  # official
    # 'torch': every parameter drawn as the authors' PyTorch modules are initialised
    # (coleaf_jax/models/init.py); 'flax': flax's defaults.
    c.model.init = "torch"  # official
    # Average each second's 8 ResNet frames before the linear 2048→D projection (HAN
    # Anchor, Reference; exact, 8x fewer FLOPs). False: project every frame first, as
    # the authors' code does (for comparisons; CMPAE's ELU embedding always does).
    c.model.pool_frames_first = True
    c.model.cmpae_ca_mix = 0.8  # official: training h = 0.8 h_CA + 0.2 h_noCA
    c.model.cmpae_inference_mix = 0.7  # official: inference 0.7 P(mix) + 0.3 P(noCA)
    c.model.cmpae_visual_dropout = 0.5  # official
    c.model.cmpae_residual_dropout = 0.2  # official: in the cross-modal residual MLPs

    c.loss = ml_collections.ConfigDict()
    c.loss.visual_label_smoothing = (0.9, 0.05)  # HAN: y_v = 0.9 y + 0.05
    c.loss.pseudo_label_segment_weight = 1.0  # with data.pseudo_labels: segment BCE weight (ours)
    # ...on the segment probabilities (ours) or on the logits (VALOR's BCE with logits)
    c.loss.pseudo_label_segment_form = "probabilities"  # ours
    # The Reference's loss (weak, class-token and KD terms): 'asl' (official: asymmetric
    # loss, summed over videos and classes) or 'bce' (paper's text, mean).
    c.loss.reference = "asl"  # official
    c.loss.class_token_warmup_epochs = 3  # official: class-token weights change after 3 epochs
    c.loss.class_token_weight_audio = (1.2, 0.001)  # official (warm-up, after); paper: (1, 1)
    c.loss.class_token_weight_visual = (1.0, 0.0)  # official; paper: (1, 1)
    # (a) contrastive: 'event_aware' (paper), 'standard' (w = 1), 'bce' (BCE on pseudo-labels), 'none'.
    c.loss.contrastive = "event_aware"
    c.loss.nce_form = "expected"  # official: -log Σ q·π; 'cross_entropy': -Σ q·log π
    c.loss.nce_temperature = 0.2  # paper
    c.loss.nce_smoothing = 0.1  # official; 0 = plain InfoNCE
    c.loss.nce_weight_audio = 0.009  # official
    c.loss.nce_weight_visual = 1.0  # official
    c.loss.pseudo_label_threshold = 0.5  # paper: r^m = 1[q^m >= 0.5]
    # (b) self-modality-aware KD
    c.loss.kd = True  # paper
    c.loss.kd_threshold_audio = 0.5  # paper
    c.loss.kd_threshold_visual = 0.6  # paper
    c.loss.kd_warmup_epochs = 3  # official: KD from epoch 4 on, then weak and KD weighted 0.5 each
    c.loss.kd_weight = 0.5  # official
    # (c) co-occurrence class correlation
    c.loss.correlation = True  # paper
    c.loss.correlation_teacher = "confident"  # official mix; 'reference' = paper's text
    c.loss.correlation_confidence_audio = (0.8, 0.1)  # official (high, low)
    c.loss.correlation_confidence_visual = (0.6, 0.4)  # official
    c.loss.correlation_scaling = "official"  # sum / C x batch; 'mean' = plain MSE
    c.loss.correlation_weight = 1e-4  # official
    c.loss.collab_start_epoch = 1  # official: collaborative Anchor terms from epoch 2 (0-based 1)
    # CMPAE backbone: weights of BCE(p^a), BCE(p^v), BCE(p_glob), NCE_av, mutual (official).
    c.loss.cmpae_weights = (2.0, 1.0, 2.0, 1.0, 1.0)
    # JoMoLD label denoising: on with the CMPAE Anchor (official; the registry's default
    # per Anchor, set by the method option).
    c.loss.denoise = True
    c.loss.denoise_ratios = "llp"  # 'llp' (shipped table) or an .npz with keys audio, visual
    # 'official': ratios 0 for the whole first epoch, full after (the authors' running
    # minimum); 'anneal': r·min(1, step/(0.9 epoch)) (JoMoLD's text).
    c.loss.denoise_schedule = "official"
    c.loss.denoise_anneal_epochs = 0.9  # with 'anneal': epochs to reach the full ratios

    c.eval = ml_collections.ConfigDict()
    # 'standard' (HAN 0.5/0.5, joint gate) or 'official' (0.52/0.25, per-modality gate: the
    # authors' CoLeaF evaluation); each Anchor's default (registry), set by the method option.
    # Other projects' rules, to score their models as they did: 'jomold' (0.5/0.5,
    # per-modality gate: JoMoLD, LSLD), 'cmpae' (audio 0.45, visual per class, segments 0.25,
    # per-modality gate: CMPAE). coleaf_jax/evaluation/metrics.py holds each.
    c.eval.thresholds = "official"
    # Per-class video-level visual thresholds replacing the preset's (e.g. CMPAE's released
    # model: those of its .xlsx, set by python -m coleaf_jax.imports cmpae); (): the preset's.
    c.eval.visual_thresholds = ()
    c.eval.batch_size = 256  # videos per evaluation batch (ours: memory, not results)
    # Model selection on validation: 'avvp' = mean of the segment and event Ao, Vo, AV,
    # T@o, E@o (docs/method.md §7); 'av' = mean of segment and event AV (UnAV-100);
    # 'type' = segment Type@AV (VALOR).
    c.eval.selection = "avvp"

    if options["method"]:
        set_method(c, options["method"], "llp")
    if options["recipe"]:
        use_paper_recipe(c)
    return c
