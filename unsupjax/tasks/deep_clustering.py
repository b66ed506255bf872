"""`unsupjax train ae-kmeans | dec | idec | n2d`: deep clustering, end to end.

Every method clusters ALL examples of the dataset (train + test, the
standard protocol: 70,000 images on MNIST) into --clusters groups:

  ae-kmeans  pretrain an autoencoder, k-means on its embedding
  dec        ... then DEC: KL(p || q) on Student-t soft assignments
  idec       ... then IDEC: DEC + gamma * reconstruction loss
  n2d        ... then UMAP of the embedding + a Gaussian mixture (N2D)

The autoencoder is pretrained here (its checkpoints land in --workdir) or
restored from an earlier run's workdir with --pretrained (any of these
methods, or `unsupjax train ae|conv-ae`, with the same architecture and
dataset). Labels, when the dataset has them, are used only for reporting
ACC (Hungarian matching), NMI and ARI; they never reach training.

Leaves in --workdir: run.json, metrics.jsonl (pretraining epochs and, for
dec/idec, every target refresh, with acc/nmi/ari when labels exist),
summary.json, labels.npy (the final clusters), confusion.png and
embedding.png (2-D PCA of the clustered embedding, coloured by cluster).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from unsupjax import autoencoder, deep_clustering as dc, kmeans, plots, train
from unsupjax.metrics import clustering as cm
from unsupjax.tasks import common

# Models whose workdir holds a reusable pretrained autoencoder checkpoint.
AE_MODELS = ("ae", "conv-ae", "ae-kmeans", "dec", "idec", "n2d")
DEC_HIDDEN = (500, 500, 2000)
PRETRAIN_EPOCHS = (("digits", 200),)   # the adam recipe's; dec-sgd: its own
PRETRAIN_EPOCHS_OTHER = 50
# How the autoencoder is pretrained. `dec-sgd` is the Keras DEC
# re-implementation's MNIST script: SGD lr 1 with momentum 0.9 for 300
# epochs from U(+-1/sqrt(fan_in)) kernels. On MNIST it beat Adam 1e-3 for
# 200 epochs on the mean of every method (docs/deep_clustering.md), so it is
# the default for the dense AE there; the Keras DEC scripts use the same
# recipe for Fashion-MNIST (not prepared here, so not measured).
RECIPES = {
    "adam": {"pretrain_optimizer": "adam", "lr": 1e-3, "kernel_init": "glorot_uniform"},
    "dec-sgd": {"pretrain_optimizer": "sgd", "lr": 1.0, "pretrain_momentum": 0.9,
                "kernel_init": "fan_in_uniform", "pretrain_epochs": 300},
}
DEC_SGD_DATASETS = ("mnist", "fashion_mnist")
CLUSTER_EPOCHS = (("digits", 100),)
CLUSTER_EPOCHS_OTHER = 20
EMBEDDING_POINTS = 5000  # points drawn in embedding.png
KMEANS_INIT = 20         # k-means++ restarts on the embedding (DEC uses 20)

METHODS = {
    "ae-kmeans": "autoencoder (DEC's d-500-500-2000-10 by default) + k-means on its embedding",
    "dec": "Deep Embedded Clustering: autoencoder, then KL(p || q) on Student-t "
           "assignments to learned centres",
    "idec": "Improved DEC: DEC plus gamma * reconstruction loss (keeps local structure)",
    "n2d": "N2D: autoencoder embedding -> UMAP -> Gaussian mixture (needs umap-learn)",
}


def _epochs(table, other, dataset):
  return dict(table).get(dataset, other)


def default_recipe(dataset: str, arch: str) -> str:
  """The pretraining recipe used when --recipe is not given."""
  return "dec-sgd" if arch == "dense" and dataset in DEC_SGD_DATASETS else "adam"


def apply_recipe(args: argparse.Namespace) -> None:
  """Fills the pretraining flags left unset (None) from --recipe (resolved
  first: `default_recipe` when not given); flags given explicitly win."""
  if args.recipe is None:
    args.recipe = default_recipe(args.dataset, args.arch)
  recipe = dict(RECIPES[args.recipe])
  recipe.setdefault("pretrain_momentum", 0.9)
  recipe.setdefault("pretrain_epochs",
                    _epochs(PRETRAIN_EPOCHS, PRETRAIN_EPOCHS_OTHER, args.dataset))
  for name, value in recipe.items():
    if getattr(args, name) is None:
      setattr(args, name, value)


def make_task(method: str) -> SimpleNamespace:
  """The CLI task (HELP, add_arguments, run) of one deep-clustering method."""

  def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_training_arguments(parser)
    parser.set_defaults(epochs=None, lr=None)
    for a in parser._actions:  # --epochs means the clustering phase here
      if a.dest == "epochs":
        a.help = ("dec/idec: most epochs of the clustering phase (default "
                  f"{CLUSTER_EPOCHS_OTHER}; {_epochs(CLUSTER_EPOCHS, 0, 'digits')} "
                  "on digits); unused by ae-kmeans and n2d")
      if a.dest == "lr":
        a.help = ("learning rate of the autoencoder pretraining (default: "
                  "--recipe's, 1e-3 for adam, 1 for dec-sgd)")
    c = parser.add_argument_group("clustering")
    c.add_argument("--clusters", type=int, default=None,
                   help="k (default: the number of classes in the labels, else 10)")
    c.add_argument("--pretrain-epochs", type=int, default=None,
                   help=f"autoencoder pretraining epochs (default: 300 with --recipe "
                        f"dec-sgd; with adam {PRETRAIN_EPOCHS_OTHER}, "
                        f"{_epochs(PRETRAIN_EPOCHS, 0, 'digits')} on digits)")
    c.add_argument("--pretrained", default=None, metavar="WORKDIR",
                   help="reuse the autoencoder trained in this workdir instead of "
                        "pretraining one")
    c.add_argument("--eval-every", type=int, default=5,
                   help="epochs between k-means ACC/NMI/ARI records during pretraining")
    if method in ("dec", "idec"):
      c.add_argument("--cluster-lr", type=float, default=None,
                     help="learning rate of the clustering phase (default: 0.01 "
                          "with sgd, 0.001 with adam)")
      c.add_argument("--optimizer", choices=dc.OPTIMIZERS,
                     default="sgd",
                     help="clustering-phase optimizer (sgd has momentum 0.9)")
      c.add_argument("--update-interval", type=int, default=None,
                     help="steps between target-distribution refreshes (default: "
                          "140, or one epoch when an epoch is shorter)")
      c.add_argument("--tol", type=float, default=1e-3,
                     help="stop when fewer than this fraction of labels change "
                          "between refreshes")
      c.add_argument("--gamma", type=float, default=0.1 if method == "idec" else 0.0,
                     help="weight of the reconstruction loss (IDEC: 0.1)")
    if method == "n2d":
      c.add_argument("--umap-dim", type=int, default=None,
                     help="UMAP output dimensions (default: --clusters)")
      c.add_argument("--umap-neighbors", type=int, default=20)
      c.add_argument("--gmm-restarts", type=int, default=10,
                     help="Gaussian-mixture fits from different initialisations; the "
                          "most likely is kept")
    m = parser.add_argument_group("autoencoder")
    m.add_argument("--arch", choices=autoencoder.ARCHS, default="dense")
    m.add_argument("--hidden", type=int, nargs="+", default=list(DEC_HIDDEN),
                   help="dense encoder widths (decoder mirrored); DEC's 500 500 2000")
    m.add_argument("--conv-features", type=int, nargs="+",
                   default=list(autoencoder.AEConfig.conv_features))
    m.add_argument("--latent-dim", type=int, default=10)
    m.add_argument("--loss", choices=autoencoder.LOSSES, default="mse")
    m.add_argument("--output", choices=autoencoder.OUTPUTS, default="linear",
                   help="decoder output: the last layer as is (linear, as DEC trains "
                        "it; needs --loss mse), or sigmoid(last layer)")
    m.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                   help="how the autoencoder is pretrained: adam (Adam 1e-3, Glorot "
                        "kernels) or dec-sgd (the Keras DEC recipe: SGD lr 1, momentum "
                        "0.9, U(+-1/sqrt(fan_in)) kernels, 300 epochs); default dec-sgd "
                        f"for the dense AE on {' and '.join(DEC_SGD_DATASETS)}, else "
                        "adam. --pretrain-optimizer, --lr, --pretrain-momentum, "
                        "--kernel-init and --pretrain-epochs override single parts")
    m.add_argument("--pretrain-optimizer", choices=autoencoder.OPTIMIZERS, default=None,
                   help="optimizer of the autoencoder pretraining (sgd uses "
                        "--pretrain-momentum); default: --recipe's")
    m.add_argument("--pretrain-momentum", type=float, default=None,
                   help="momentum of --pretrain-optimizer sgd (default 0.9)")
    m.add_argument("--kernel-init", choices=autoencoder.KERNEL_INITS, default=None,
                   help="dense layers' initialiser: Keras's default (glorot_uniform) or "
                        "U(+-1/sqrt(fan_in)); default: --recipe's")

  def check_args(args: argparse.Namespace) -> None:
    if args.epochs is None:
      args.epochs = _epochs(CLUSTER_EPOCHS, CLUSTER_EPOCHS_OTHER, args.dataset)
    apply_recipe(args)
    if args.arch == "conv" and args.recipe == "dec-sgd":
      raise common.UsageError("--recipe: dec-sgd applies to --arch dense only")
    common.resolve_common(args, method)
    common.check_positive(args.pretrain_epochs, "--pretrain-epochs")
    common.check_positive(args.eval_every, "--eval-every")
    common.check_positive(args.latent_dim, "--latent-dim")
    for w in args.hidden:
      common.check_positive(w, "--hidden")
    for f in args.conv_features:
      common.check_positive(f, "--conv-features")
    if args.clusters is not None and args.clusters < 2:
      raise common.UsageError(f"--clusters: expected an integer >= 2, got {args.clusters}")
    if method in ("dec", "idec"):
      if args.cluster_lr is None:
        args.cluster_lr = 0.01 if args.optimizer == "sgd" else 1e-3
      common.check_positive(args.cluster_lr, "--cluster-lr", float)
      if args.update_interval is not None:
        common.check_positive(args.update_interval, "--update-interval")
      if not 0 <= args.tol < 1:
        raise common.UsageError(f"--tol: expected a fraction in [0, 1), got {args.tol}")
      if not args.gamma >= 0:
        raise common.UsageError(f"--gamma: expected >= 0, got {args.gamma}")
    if method == "n2d":
      if args.umap_dim is not None:
        common.check_positive(args.umap_dim, "--umap-dim")
      if args.umap_neighbors < 2:
        raise common.UsageError(f"--umap-neighbors: expected >= 2, got {args.umap_neighbors}")
      common.check_positive(args.gmm_restarts, "--gmm-restarts")
      try:
        import umap  # noqa: F401, PLC0415
      except ImportError:
        raise common.UsageError(
            "n2d: needs umap-learn: pip install 'unsupjax[cluster]'") from None
    if not 0 <= args.pretrain_momentum < 1:
      raise common.UsageError(f"--pretrain-momentum: expected a value in [0, 1), got "
                              f"{args.pretrain_momentum}")
    if args.arch == "conv" and args.kernel_init != "glorot_uniform":
      raise common.UsageError("--kernel-init: applies to --arch dense only")
    if args.output == "linear" and args.loss != "mse":
      raise common.UsageError(f"--loss: --output linear needs --loss mse, got {args.loss}")
    if args.pretrained is not None and args.resume:
      raise common.UsageError("--resume: not with --pretrained (nothing is pretrained here)")
    if jax.process_count() > 1:
      raise common.UsageError(
          f"--num-processes: {method} clusters every example in one process (its "
          f"targets and k-means see the whole data set); got {jax.process_count()} "
          "processes. Use --parallel on one host's devices instead")

  def ae_config(args) -> autoencoder.AEConfig:
    return autoencoder.AEConfig(
        arch=args.arch, hidden=tuple(args.hidden), conv_features=tuple(args.conv_features),
        latent_dim=args.latent_dim, learning_rate=args.lr, loss=args.loss,
        linear_code=True, output=args.output, optimizer=args.pretrain_optimizer,
        momentum=args.pretrain_momentum, kernel_init=args.kernel_init)

  def load_all(args, config):
    tr, te = common.load_splits(args, config.check_input_shape, method)
    x = np.concatenate([tr.x, te.x])
    y = (np.concatenate([tr.y, te.y]) if tr.y is not None and te.y is not None else None)
    return (x.reshape(len(x), -1) if config.arch == "dense" else x), y

  def restore_pretrained(args, config, x) -> autoencoder.AEState:
    """The AE of --pretrained WORKDIR, after checking it fits this run."""
    src = pathlib.Path(args.pretrained)
    run_file = src / common.RUN_FILE
    if not run_file.is_file():
      raise common.UsageError(f"--pretrained: {src} holds no run ({common.RUN_FILE} missing)")
    try:
      record = json.loads(run_file.read_text())
    except ValueError:
      raise common.UsageError(f"--pretrained: {run_file} is not a valid run record") from None
    model, cfg = record.get("model"), record.get("config", {})
    if model not in AE_MODELS:
      raise common.UsageError(f"--pretrained: {src} holds a {model!r} run, expected an "
                              f"autoencoder from one of {AE_MODELS}")
    want = {"dataset": args.dataset, "arch": config.arch, "latent_dim": config.latent_dim}
    if config.arch == "dense":
      want["hidden"] = list(config.hidden)
    else:
      want["conv_features"] = list(config.conv_features)
    for k, v in want.items():
      if cfg.get(k) != v:
        raise common.UsageError(
            f"--pretrained: {src} holds an autoencoder with {k}={cfg.get(k)!r}, this "
            f"run needs {k}={v!r} (an incompatible model)")
    if not (src / train.CHECKPOINT_DIR).is_dir():
      raise common.UsageError(f"--pretrained: {src} has no checkpoints/ (it reused "
                              "another run's autoencoder; point at that one)")
    cfg_loaded = autoencoder.AEConfig(
        arch=config.arch, hidden=config.hidden, conv_features=config.conv_features,
        latent_dim=config.latent_dim, learning_rate=cfg.get("lr", config.learning_rate),
        loss=cfg.get("loss", config.loss),
        # `unsupjax train ae|conv-ae` runs have a ReLU code and no such key.
        linear_code=bool(cfg.get("linear_code", False)),
        output=cfg.get("output", "sigmoid"),
        # Runs from before these options pretrained with Adam, Keras's init.
        optimizer=cfg.get("pretrain_optimizer", "adam"),
        momentum=cfg.get("pretrain_momentum", 0.9),
        kernel_init=cfg.get("kernel_init", "glorot_uniform"))
    like = autoencoder.init_state(jax.random.PRNGKey(0), cfg_loaded, x[:1])
    try:
      return train.restore_state(src, like)
    except Exception as e:  # noqa: BLE001 (orbax raises many kinds)
      raise common.UsageError(f"--pretrained: the checkpoint in {src} does not fit "
                              f"this model: {type(e).__name__}: {e}") from None

  def report(y, labels) -> dict:
    return cm.clustering_report(y, labels) if y is not None else {}

  def run(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    check_args(args)
    config = ae_config(args)
    x, y = load_all(args, config)
    n = len(x)
    k = args.clusters if args.clusters is not None else (
        int(np.unique(y).size) if y is not None else 10)
    if k > n:
      raise common.UsageError(f"--clusters: expected at most {n} (examples), got {k}")
    ae_state = restore_pretrained(args, config, x) if args.pretrained else None
    ae_config_used = ae_state.config if ae_state is not None else config
    fields = dict(arch=config.arch, hidden=list(config.hidden),
                  conv_features=list(config.conv_features), latent_dim=config.latent_dim,
                  linear_code=bool(ae_config_used.linear_code), loss=ae_config_used.loss,
                  output=ae_config_used.output,
                  pretrain_optimizer=ae_config_used.optimizer,
                  pretrain_momentum=ae_config_used.momentum,
                  kernel_init=ae_config_used.kernel_init,
                  recipe=None if args.pretrained else args.recipe,
                  clusters=k,
                  pretrain_epochs=args.pretrain_epochs, pretrained=args.pretrained)
    if method in ("dec", "idec"):
      fields.update(optimizer=args.optimizer, cluster_lr=args.cluster_lr,
                    update_interval=args.update_interval, tol=args.tol, gamma=args.gamma)
    if method == "n2d":
      fields.update(umap_dim=args.umap_dim or k, umap_neighbors=args.umap_neighbors,
                    gmm_restarts=args.gmm_restarts)
    run_config = common.run_config(args, **fields)
    workdir = common.prepare_workdir(args, method, run_config)
    common.setup_compile_cache(args)
    metrics_path = workdir / train.METRICS_FILE
    key = jax.random.PRNGKey(args.seed)
    init_key, fit_key, km_key, dec_key = jax.random.split(key, 4)
    timings = {}

    # 1. The autoencoder.
    t0 = time.perf_counter()
    pretrain_result = None
    if ae_state is None:
      def pretrain_callback(epoch, state):
        if y is None or (epoch % args.eval_every and epoch != args.pretrain_epochs):
          return {}
        z = dc.embed(state, x)
        km = kmeans.fit(jax.random.fold_in(km_key, epoch), jnp.asarray(z), k, n_init=3)
        return {f"kmeans_{m}": v for m, v in report(y, np.asarray(km.labels)).items()}

      state = autoencoder.init_state(init_key, config, x[:1])
      pretrain_result = train.fit(
          state, autoencoder.train_step, None, x, key=fit_key,
          epochs=args.pretrain_epochs, batch_size=args.batch_size, workdir=workdir,
          checkpoint_every=args.checkpoint_every, resume=args.resume,
          progress=not args.no_progress, desc=f"{method} pretrain {args.dataset}",
          epoch_callback=pretrain_callback, **common.fit_parallel(args))
      ae_state = pretrain_result.state
    elif metrics_path.exists():
      metrics_path.unlink()
    timings["pretrain_seconds"] = time.perf_counter() - t0

    def log(record: dict) -> None:
      with open(metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")

    # 2. Clustering.
    t0 = time.perf_counter()
    z = dc.embed(ae_state, x)
    extra: dict = {}
    if method == "ae-kmeans":
      km = kmeans.fit(km_key, jnp.asarray(z), k, n_init=KMEANS_INIT)
      labels, space = np.asarray(km.labels), z
    elif method == "n2d":
      labels, space = dc.manifold_cluster(z, k, seed=args.seed,
                                          n_components=args.umap_dim or k,
                                          n_neighbors=args.umap_neighbors,
                                          gmm_restarts=args.gmm_restarts)
    else:
      per_epoch = n // args.batch_size
      interval = args.update_interval or min(140, per_epoch)
      dconf = dc.DECConfig(n_clusters=k, gamma=args.gamma, optimizer=args.optimizer,
                           learning_rate=args.cluster_lr, update_interval=interval,
                           tol=args.tol)
      dstate, km_labels = dc.init_state(km_key, dconf, ae_state, x,
                                        n_init=KMEANS_INIT)
      extra.update({f"init_kmeans_{m}": v for m, v in report(y, km_labels).items()})

      def on_refresh(record, refreshed):
        log({"phase": method, **record, **report(y, refreshed)})

      dstate, labels, records = dc.fit(dstate, x, key=dec_key, max_epochs=args.epochs,
                                       batch_size=args.batch_size, callback=on_refresh,
                                       **common.fit_parallel(args))
      extra.update({"cluster_steps": int(dstate.step), "refreshes": len(records) - 1,
                    "stopped_by_tol": bool(records[-1]["delta_label"] is not None
                                          and records[-1]["delta_label"] < dconf.tol),
                    "update_interval": interval})
      space = dc.embed(dstate, x)
    timings["cluster_seconds"] = time.perf_counter() - t0

    # 3. Outputs.
    scores = report(y, labels)
    np.save(workdir / "labels.npy", labels.astype(np.int32))
    if y is not None:
      table, clusters, _ = cm.contingency(y, labels)
      match = cm.matching(y, labels)
      order = sorted(range(len(clusters)), key=lambda i: match.get(int(clusters[i]), 1 << 30))
      plots.save_confusion(workdir / "confusion.png", table[order],
                           f"{method} on {args.dataset}: ACC {scores['acc']:.3f}")
    rng = np.random.default_rng(args.seed)
    shown = rng.choice(n, size=min(n, EMBEDDING_POINTS), replace=False)
    pts = _pca2(np.asarray(space)[shown])
    plots.save_scatter(workdir / "embedding.png", pts, labels[shown],
                       f"{method} embedding (PCA to 2-D), coloured by cluster")
    if pretrain_result is not None:
      summary = common.fit_summary(method, args, run_config, pretrain_result, t_start)
      summary["epochs"] = args.pretrain_epochs  # fit's epochs were pretraining's
    else:
      summary = {"model": method, "dataset": args.dataset, "config": run_config,
                 "pretrained": args.pretrained, "device": common.device_description()}
    summary.update(scores)
    summary.update(extra)
    summary.update(timings)
    if method in ("dec", "idec"):
      summary["cluster_max_epochs"] = args.epochs
    summary.update({"n_examples": n, "clusters": k,
                    "cluster_sizes": np.bincount(labels, minlength=k).tolist(),
                    "wall_seconds": time.perf_counter() - t_start})
    common.write_summary(workdir, summary)
    what = (f"ACC {scores['acc']:.4f}, NMI {scores['nmi']:.4f}, ARI {scores['ari']:.4f}"
            if scores else "no labels to score against")
    print(f"{method} on {args.dataset} ({n} examples, k={k}): {what} "
          f"({summary['wall_seconds']:.1f} s) -> {workdir}")
    return summary

  return SimpleNamespace(HELP=METHODS[method], add_arguments=add_arguments, run=run)


def _pca2(z: np.ndarray) -> np.ndarray:
  zc = z - z.mean(axis=0)
  _, _, vt = np.linalg.svd(zc, full_matrices=False)
  return zc @ vt[:2].T
