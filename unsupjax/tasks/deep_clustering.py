"""`unsupjax train ae-kmeans | dec | idec | n2d`: deep clustering, end to end.

Every method clusters ALL examples of the dataset (train + test, the
standard protocol: 70,000 images on MNIST) into --clusters groups, from an
autoencoder's embedding:

  ae-kmeans  pretrain the autoencoder, then k-means on its embedding
  n2d        ... then UMAP of the embedding and a Gaussian mixture (N2D)
  dec        from that autoencoder: DEC, KL(p || q) on Student-t assignments
  idec       ... IDEC: L_r + gamma * KL(p || q), the decoder kept

ae-kmeans and n2d train only the autoencoder: their work directory is an
autoencoder run (`checkpoints/` hold it) and the clustering is their report.
dec and idec train in two phases. The first is an ae-kmeans run of the same
settings in WORKDIR/pretrain (`unsupjax train ae-kmeans --workdir
WORKDIR/pretrain` would do the same); the second trains DEC/IDEC from its
autoencoder into WORKDIR itself (`checkpoints/` hold the DEC state: the
fine-tuned autoencoder, the centres and the targets). --pretrained RUN skips
the first phase and takes the autoencoder of RUN instead (any ae-kmeans /
n2d / dec / idec run that pretrained, or an `ae` / `conv-ae` run, with the
same architecture and dataset); with --pretrained, ae-kmeans and n2d train
nothing. --resume continues whichever phase was interrupted.

Labels, when the dataset has them, are used only for reporting ACC
(Hungarian matching), NMI and ARI; they never reach training. Randomness:
the autoencoder's initialisation and data order come from the run key as in
every run; k-means (ae-kmeans' clustering and DEC's start, the same draw)
from `named(key, "kmeans")`; the k-means scores during pretraining from
`named(key, "eval-kmeans")` folded with the epoch; the clustering phase's
data order from `named(key, "clustering")`; UMAP and the mixture from --seed.

Leaves in --workdir: run.json, metrics.jsonl (ae-kmeans/n2d: pretraining
epochs with kmeans_acc/nmi/ari every --eval-every; dec/idec: one record per
target refresh, with "phase", delta_label and acc/nmi/ari), summary.json,
status.json, curves.png, checkpoints/, labels.npy (the final clusters),
confusion.png and embedding.png (a 2-D PCA of the clustered space, coloured
by cluster); dec/idec also pretrain/ (the first phase's run).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unsupjax import config as config_lib
from unsupjax import deep_clustering as dc
from unsupjax import kmeans, plots, runlog, training
from unsupjax.config import UsageError, flag_error, option
from unsupjax.metrics import clustering as cm
from unsupjax.models import autoencoder
from unsupjax.models import dec as dec_model
from unsupjax.rng import named, run_key
from unsupjax.tasks import base, watch

DEC_HIDDEN = (500, 500, 2000)
# How the autoencoder is pretrained. `dec-sgd` is the Keras DEC
# re-implementation's MNIST script (SGD lr 1, momentum 0.9, U(+-1/sqrt(fan_in))
# kernels, 300 epochs); it beat Adam 1e-3 on MNIST (docs/results/deep_clustering.md),
# so it is the default for the dense autoencoder there and on Fashion-MNIST.
RECIPES = {
    "adam": {"pretrain_optimizer": "adam", "learning_rate": 1e-3,
             "kernel_init": "glorot_uniform"},
    "dec-sgd": {"pretrain_optimizer": "sgd", "learning_rate": 1.0, "pretrain_momentum": 0.9,
                "kernel_init": "fan_in_uniform", "pretrain_epochs": 300},
}
DEC_SGD_DATASETS = ("mnist", "fashion_mnist")
PRETRAIN_MOMENTUM = 0.9
PRETRAIN_EPOCHS = {"digits": 200}   # the adam recipe's
PRETRAIN_EPOCHS_OTHER = 50
UPDATE_INTERVAL = 140               # DEC's, unless an epoch is shorter
KMEANS_INIT = 20                    # k-means++ restarts on the embedding (DEC uses 20)
EVAL_KMEANS_INIT = 3                # ... for the scores logged during pretraining
EMBEDDING_POINTS = 5000             # points drawn in embedding.png
PRETRAIN_DIR = "pretrain"           # dec/idec: the first phase's run
# What a run writes beside base.RUN_OUTPUTS (cleared by --overwrite too).
OUTPUTS = ("labels.npy", "confusion.png", "embedding.png")
# Models whose work directory holds a reusable autoencoder.
AE_MODELS = ("ae", "conv-ae", "ae-kmeans", "n2d", "dec", "idec")
CLUSTER_PHASE = ("dec", "idec")


def default_recipe(dataset: str, arch: str) -> str:
  """The pretraining recipe used when --recipe is not given."""
  return "dec-sgd" if arch == "dense" and dataset in DEC_SGD_DATASETS else "adam"


def recipe_settings(recipe: str, dataset: str) -> dict[str, Any]:
  """Every pretraining setting `recipe` fixes (field name -> value)."""
  settings = {"pretrain_momentum": PRETRAIN_MOMENTUM,
              "pretrain_epochs": PRETRAIN_EPOCHS.get(dataset, PRETRAIN_EPOCHS_OTHER)}
  settings.update(RECIPES[recipe])
  return settings


# ---------------------------------------------------------------------------
# The configs: one per command.


@dataclasses.dataclass(frozen=True)
class PretrainFlags(base.TrainConfig):
  """What every deep-clustering command shares: the data, the autoencoder
  and its pretraining, k. Fields left None take --recipe's value (the
  recipe itself: `default_recipe`) when the config is made."""
  epochs: int | None = option(None, hidden=True)   # = pretrain_epochs: all it trains
  learning_rate: float | None = option(
      None, "learning rate of the autoencoder pretraining", flag="lr",
      default_help="--recipe's: 1 for dec-sgd, 0.001 for adam", group="data and training")
  n_clusters: int | None = option(None, "k, the number of clusters", flag="clusters",
                                  default_help="the number of classes in the labels, else 10",
                                  group="clustering")
  pretrain_epochs: int | None = option(
      None, "autoencoder pretraining epochs", scope="grow",
      default_help="--recipe's: 300 with dec-sgd; with adam 50, 200 on digits",
      group="clustering")
  pretrained: str | None = option(None, "take the autoencoder of the run in WORKDIR (ae-kmeans, "
                                  "n2d, dec, idec, ae or conv-ae) instead of pretraining one",
                                  metavar="WORKDIR", group="clustering")
  eval_every: int = option(5, "pretraining epochs between k-means ACC/NMI/ARI records",
                           group="clustering")
  arch: str = option("dense", "autoencoder architecture", choices=autoencoder.ARCHS,
                     group="autoencoder")
  hidden: tuple[int, ...] = option(DEC_HIDDEN, "dense encoder widths (decoder mirrored); "
                                   "DEC's 500 500 2000", group="autoencoder")
  conv_features: tuple[int, ...] = option((32, 64), "--arch conv: channels of the stride-2 "
                                          "convolutions", group="autoencoder")
  latent_dim: int = option(10, "size of the embedding (a linear code)", group="autoencoder")
  loss: str = option("mse", "reconstruction loss", choices=autoencoder.LOSSES,
                     group="autoencoder")
  output: str = option("linear", "decoder output: the last layer as is (linear, as DEC "
                       "trains it; needs --loss mse), or sigmoid(last layer)",
                       choices=autoencoder.OUTPUTS, group="autoencoder")
  recipe: str | None = option(
      None, "how the autoencoder is pretrained: adam (Adam 1e-3, Glorot kernels) or dec-sgd "
      "(the Keras DEC recipe: SGD lr 1, momentum 0.9, U(+-1/sqrt(fan_in)) kernels, 300 "
      "epochs); --pretrain-optimizer, --lr, --pretrain-momentum, --kernel-init and "
      "--pretrain-epochs override single parts", choices=tuple(RECIPES),
      default_help=f"dec-sgd for the dense autoencoder on {' and '.join(DEC_SGD_DATASETS)}, "
      "else adam", group="autoencoder")
  pretrain_optimizer: str | None = option(
      None, "optimizer of the autoencoder pretraining (sgd uses --pretrain-momentum)",
      choices=autoencoder.OPTIMIZERS, default_help="--recipe's", group="autoencoder")
  pretrain_momentum: float | None = option(
      None, "momentum of --pretrain-optimizer sgd", default_help=str(PRETRAIN_MOMENTUM),
      group="autoencoder")
  kernel_init: str | None = option(
      None, "dense layers' initialiser: Keras's default (glorot_uniform) or "
      "U(+-1/sqrt(fan_in))", choices=autoencoder.KERNEL_INITS,
      default_help="--recipe's", group="autoencoder")

  # Whether `epochs` counts the pretraining (the autoencoder is all the
  # command trains) or a phase of its own (dec, idec).
  EPOCHS_ARE_PRETRAINING = True

  def _fill(self, name: str, value: Any) -> None:
    if getattr(self, name) is None:
      object.__setattr__(self, name, value)

  def __post_init__(self):
    self._fill("recipe", default_recipe(self.dataset, self.arch))
    if self.recipe not in RECIPES:
      raise ValueError(f"recipe: expected one of {tuple(RECIPES)}, got {self.recipe!r}")
    for name, value in recipe_settings(self.recipe, self.dataset).items():
      self._fill(name, value)
    base._positive(self.pretrain_epochs, "pretrain_epochs")
    if self.EPOCHS_ARE_PRETRAINING:
      if self.epochs not in (None, self.pretrain_epochs):
        raise ValueError(f"epochs: this command trains only the autoencoder, for "
                         f"pretrain_epochs; expected None or {self.pretrain_epochs}, "
                         f"got {self.epochs!r}")
      object.__setattr__(self, "epochs", self.pretrain_epochs)
    super().__post_init__()
    base._positive(self.eval_every, "eval_every")
    if self.n_clusters is not None and (isinstance(self.n_clusters, bool)
                                        or not isinstance(self.n_clusters, int)
                                        or self.n_clusters < 2):
      raise ValueError(f"n_clusters: expected an integer >= 2, got {self.n_clusters}")
    if not 0 <= self.pretrain_momentum < 1:
      raise ValueError(f"pretrain_momentum: expected a value in [0, 1), got "
                       f"{self.pretrain_momentum}")
    if self.arch == "conv" and self.recipe == "dec-sgd":
      raise ValueError("recipe: dec-sgd is the dense autoencoder's recipe; expected adam "
                       "with arch 'conv', got dec-sgd")
    if self.arch == "conv" and self.kernel_init != "glorot_uniform":
      raise ValueError(f"kernel_init: names the dense autoencoder's initialiser; expected "
                       f"glorot_uniform with arch 'conv', got {self.kernel_init}")


@dataclasses.dataclass(frozen=True)
class AEKMeansFlags(PretrainFlags):
  pass


@dataclasses.dataclass(frozen=True)
class N2DFlags(PretrainFlags):
  n_components: int | None = option(None, "UMAP output dimensions", flag="umap_dim",
                                    default_help="--clusters", group="clustering")
  n_neighbors: int = option(20, "UMAP neighbours", flag="umap_neighbors",
                            group="clustering")
  gmm_restarts: int = option(10, "Gaussian-mixture fits from different initialisations; "
                             "the most likely is kept", group="clustering")

  def __post_init__(self):
    super().__post_init__()
    if self.n_components is not None:
      base._positive(self.n_components, "n_components")
    if isinstance(self.n_neighbors, bool) or not isinstance(self.n_neighbors, int) \
        or self.n_neighbors < 2:
      raise ValueError(f"n_neighbors: expected an integer >= 2, got {self.n_neighbors}")
    base._positive(self.gmm_restarts, "gmm_restarts")


@dataclasses.dataclass(frozen=True)
class DECFlags(PretrainFlags):
  epochs: int | None = option(None, "most epochs (passes over the data) of the clustering "
                              "phase", scope="grow", default_help="20; 100 on digits",
                              group="data and training")
  # Fixed on --resume: the clustering phase started from that autoencoder.
  pretrain_epochs: int | None = option(
      None, "autoencoder pretraining epochs",
      default_help="--recipe's: 300 with dec-sgd; with adam 50, 200 on digits",
      group="clustering")
  optimizer: str = option("sgd", "clustering-phase optimizer (sgd has momentum 0.9)",
                          choices=dec_model.OPTIMIZERS, group="clustering")
  cluster_lr: float | None = option(None, "learning rate of the clustering phase",
                                    default_help="0.01 with sgd, 0.001 with adam",
                                    group="clustering")
  update_interval: int | None = option(None, "steps between target-distribution refreshes",
                                       default_help=f"{UPDATE_INTERVAL}, or one epoch when an "
                                       "epoch is shorter", group="clustering")
  tol: float = option(1e-3, "stop when fewer than this fraction of labels change between "
                      "refreshes", group="clustering")
  idec: bool = option(False, hidden=True)
  gamma: float = option(0.1, hidden=True)
  gamma_on: str = option("clustering", hidden=True)

  EPOCHS = {"digits": 100}
  EPOCHS_OTHER = 20
  EPOCHS_ARE_PRETRAINING = False

  def __post_init__(self):
    self._fill("cluster_lr", 0.01 if self.optimizer == "sgd" else 1e-3)
    super().__post_init__()
    base._positive(self.cluster_lr, "cluster_lr", float)
    # DECConfig checks the rest (tol, gamma, ...); k and the interval are
    # known only with the data, so stand-ins here.
    base.derive(dec_model.DECConfig, self, n_clusters=2, learning_rate=self.cluster_lr,
                update_interval=self.update_interval or 1)


@dataclasses.dataclass(frozen=True)
class IDECFlags(DECFlags):
  # Adam 1e-3 as IDEC's reference code on MNIST: under L_r + 0.1 * KL, SGD at
  # DEC's 0.01 barely moves the clusters (docs/results/deep_clustering.md).
  optimizer: str = option("adam", "clustering-phase optimizer (sgd has momentum 0.9)",
                          choices=dec_model.OPTIMIZERS, group="clustering")
  idec: bool = option(True, hidden=True)
  gamma: float = option(0.1, "IDEC: the weight gamma of the loss L_r + gamma * KL(p || q) "
                        "(with --gamma-on reconstruction: KL(p || q) + gamma * L_r)",
                        group="clustering")
  gamma_on: str = option(
      "clustering", "the term --gamma weights: the clustering loss (Guo et al. 2017) or the "
      "reconstruction loss (this command's earlier weighting)", choices=dec_model.GAMMA_ON,
      group="clustering")


# ---------------------------------------------------------------------------
# The task's pieces (what base's contract asks for).


def ae_config(cfg: PretrainFlags) -> autoencoder.AEConfig:
  """The autoencoder the flags describe (DEC's: a linear code)."""
  return base.derive(autoencoder.AEConfig, cfg, linear_code=True,
                     optimizer=cfg.pretrain_optimizer, momentum=cfg.pretrain_momentum)


def load(cfg: PretrainFlags) -> base.Data:
  """Every example, train and test (train_x: all of them; no test_x)."""
  tr, te = base.load_splits(cfg)
  x = np.concatenate([tr.x, te.x])
  return base.Data(tr, te, x.reshape(len(x), -1) if cfg.arch == "dense" else x, None)


def labels_of(data: base.Data) -> np.ndarray | None:
  """The class labels of data.train_x's rows, or None without labels."""
  if data.train.y is None or data.test.y is None:
    return None
  return np.concatenate([data.train.y, data.test.y])


def n_clusters(cfg: PretrainFlags, data: base.Data) -> int:
  """k: --clusters, else the number of classes, else 10."""
  y = labels_of(data)
  k = cfg.n_clusters or (int(np.unique(y).size) if y is not None else 10)
  n = len(data.train_x)
  if k > n:
    raise UsageError(f"--clusters: expected at most {n} (examples), got {k}")
  return k


def dec_config(cfg: DECFlags, data: base.Data) -> dec_model.DECConfig:
  n = len(data.train_x)
  interval = cfg.update_interval or max(1, min(UPDATE_INTERVAL, n // cfg.batch_size))
  try:
    return base.derive(dec_model.DECConfig, cfg, n_clusters=n_clusters(cfg, data),
                       learning_rate=cfg.cluster_lr, update_interval=interval)
  except ValueError as e:
    raise flag_error(type(cfg), e) from None


def init_dec(cfg: DECFlags, data: base.Data, key) -> dec_model.DECState:
  """A DEC state of this run's shapes (what a checkpoint is restored into)."""
  dcfg = dec_config(cfg, data)
  ae = autoencoder.init_state(key, ae_config(cfg), data.train_x[:1])
  return dec_model.create_state(dcfg, ae, jnp.zeros((dcfg.n_clusters, cfg.latent_dim)),
                                len(data.train_x))


def pretrain_fit_kwargs(cfg: PretrainFlags, data: base.Data, state, key) -> dict:
  """The k-means scores of the embedding every --eval-every epochs."""
  y = labels_of(data)
  if y is None:
    return {}
  k = n_clusters(cfg, data)

  def kmeans_scores(epoch: int, st) -> dict:
    z = dec_model.embed(st, data.train_x)
    km = kmeans.fit(jax.random.fold_in(named(key, "eval-kmeans"), epoch), jnp.asarray(z), k,
                    n_init=EVAL_KMEANS_INIT)
    return {f"kmeans_{m}": v for m, v in scores(y, km.labels).items()}

  return {"actions": [training.Action(kmeans_scores, every=cfg.eval_every)]}


def scores(y: np.ndarray | None, labels) -> dict[str, float]:
  """acc, nmi, ari of labels against the classes y (nothing without y)."""
  return cm.clustering_report(y, np.asarray(labels)) if y is not None else {}


def cluster(method: str, cfg, state, data: base.Data, key) -> tuple[np.ndarray, np.ndarray]:
  """(labels i32[n], the clustered space f32[n, d]) of every example, as
  `method` clusters them from `state` (an autoencoder; dec/idec: a DEC state)."""
  k = n_clusters(cfg, data)
  z = dec_model.embed(state, data.train_x)
  if method in CLUSTER_PHASE:
    q = dec_model.student_t_assignment(jnp.asarray(z), state.params["centroids"],
                                       state.config.alpha)
    return np.asarray(jnp.argmax(q, axis=1), np.int32), z
  if method == "n2d":
    return dc.manifold_cluster(z, k, seed=cfg.seed, n_components=cfg.n_components or k,
                               n_neighbors=cfg.n_neighbors, gmm_restarts=cfg.gmm_restarts)
  km = kmeans.fit(named(key, "kmeans"), jnp.asarray(z), k, n_init=KMEANS_INIT)
  return np.asarray(km.labels, np.int32), z


def make_evaluate(method: str) -> Callable[..., dict]:
  def evaluate(cfg, state, data: base.Data, key, opts=None) -> dict:
    """ACC/NMI/ARI of the clusters (the same draws as training's report)."""
    labels, _ = cluster(method, cfg, state, data, key)
    return {"n_examples": len(labels), "clusters": n_clusters(cfg, data),
            **scores(labels_of(data), labels)}
  return evaluate


def _pca2(z: np.ndarray) -> np.ndarray:
  zc = z - z.mean(axis=0)
  _, _, vt = np.linalg.svd(zc, full_matrices=False)
  return zc @ vt[:2].T


def write_outputs(run: base.Run, method: str, labels: np.ndarray, space: np.ndarray) -> dict:
  """labels.npy, confusion.png (with labels) and embedding.png; returns the
  scores and the cluster sizes."""
  y = labels_of(run.data)
  k = n_clusters(run.cfg, run.data)
  labels = np.asarray(labels, np.int32)
  values = scores(y, labels)
  if jax.process_index() == 0:
    tmp = run.workdir / f".labels.{os.getpid()}.npy"
    np.save(tmp, labels)
    os.replace(tmp, run.workdir / "labels.npy")
    if y is not None:
      table, clusters, _ = cm.contingency(y, labels)
      match = cm.matching(y, labels)
      order = sorted(range(len(clusters)), key=lambda i: match.get(int(clusters[i]), 1 << 30))
      plots.save_confusion(run.workdir / "confusion.png", table[order],
                           f"{method} on {run.cfg.dataset}: ACC {values['acc']:.3f}")
    n = len(labels)
    shown = np.asarray(jax.random.choice(named(run.key, "embedding-points"), n,
                                         (min(n, EMBEDDING_POINTS),), replace=False))
    plots.save_scatter(run.workdir / "embedding.png", _pca2(np.asarray(space)[shown]),
                       labels[shown], f"{method} embedding (PCA to 2-D), coloured by cluster")
  return {**values, "n_examples": len(labels), "clusters": k,
          "cluster_sizes": np.bincount(labels, minlength=k).tolist()}


def make_report(method: str) -> Callable[[base.Run], dict]:
  def report(run: base.Run) -> dict:
    """The clusters of every example, their scores and pictures (ae-kmeans,
    n2d: the clustering itself, after the autoencoder's training)."""
    t0 = time.perf_counter()
    labels, space = cluster(method, run.cfg, run.state, run.data, run.key)
    values = {}
    if method not in CLUSTER_PHASE:
      values = {"pretrain_seconds": run.result.wall_seconds if run.result is not None else 0.0,
                "cluster_seconds": time.perf_counter() - t0}
    values.update(write_outputs(run, method, labels, space))
    return values
  return report


# ---------------------------------------------------------------------------
# The autoencoder of --pretrained.


def find_autoencoder(path: str) -> tuple[pathlib.Path, str, dict]:
  """(the directory whose checkpoints/ hold the autoencoder, that run's
  model, its recorded config) of --pretrained `path`; a dec/idec run's
  autoencoder is its pretrain/ run."""
  src = pathlib.Path(path)
  record = base.read_record(src, flag="--pretrained")
  if record is None:
    raise UsageError(f"--pretrained: {src} holds no run ({base.RUN_FILE} missing)")
  model, rec = record.get("model"), record["config"]
  if model not in AE_MODELS:
    raise UsageError(f"--pretrained: {src} holds a {model!r} run, expected an autoencoder "
                     f"from one of {AE_MODELS}")
  if model in CLUSTER_PHASE and not rec.get("pretrained"):
    src = src / PRETRAIN_DIR
    record = base.read_record(src, flag="--pretrained") if src.is_dir() else None
    if record is None:
      raise UsageError(f"--pretrained: {src.parent} has no pretrained autoencoder "
                       f"({PRETRAIN_DIR}/{base.RUN_FILE} missing)")
    model, rec = record.get("model"), record["config"]
  if rec.get("pretrained"):
    raise UsageError(f"--pretrained: {src} has no checkpoints/ of an autoencoder (it reused "
                     f"the one of {rec['pretrained']}; point at that one)")
  if not (src / training.CHECKPOINT_DIR).is_dir():
    raise UsageError(f"--pretrained: {src} has no checkpoints/")
  return src, model, rec


def check_compatible(cfg: PretrainFlags, src: pathlib.Path, rec: dict) -> None:
  """The autoencoder of `rec` is the one this run's flags describe."""
  want = {"dataset": cfg.dataset, "arch": cfg.arch, "latent_dim": cfg.latent_dim}
  if cfg.arch == "dense":
    want["hidden"] = list(cfg.hidden)
  else:
    want["conv_features"] = list(cfg.conv_features)
  for name, value in want.items():
    if rec.get(name) != value:
      raise UsageError(f"--pretrained: {src} holds an autoencoder with {name}={rec.get(name)!r}, "
                       f"this run needs {name}={value!r} (an incompatible model)")


def source_ae_config(src: pathlib.Path, model: str, rec: dict) -> autoencoder.AEConfig:
  """The configuration the autoencoder in `src` was trained with (its
  output, loss, code and optimizer come from there, not from this run)."""
  ours = model not in ("ae", "conv-ae")
  try:
    return autoencoder.AEConfig(
        arch=rec["arch"], hidden=tuple(rec.get("hidden", DEC_HIDDEN)),
        conv_features=tuple(rec.get("conv_features", (32, 64))),
        latent_dim=rec["latent_dim"],
        learning_rate=rec.get("learning_rate", rec.get("lr")) or 1e-3,
        loss=rec.get("loss", "bce"),
        # `ae`/`conv-ae` runs have a ReLU code; the deep-clustering ones a linear one.
        linear_code=ours or bool(rec.get("linear_code", False)),
        output=rec.get("output", "sigmoid"),
        optimizer=(rec.get("pretrain_optimizer") if ours else None) or "adam",
        momentum=rec.get("pretrain_momentum") if rec.get("pretrain_momentum") is not None
        else PRETRAIN_MOMENTUM,
        kernel_init=rec.get("kernel_init") or "glorot_uniform")
  except (KeyError, TypeError, ValueError) as e:
    raise UsageError(f"--pretrained: {src / base.RUN_FILE} does not describe an autoencoder "
                     f"this version can restore ({e})") from None


def pretrained_source(cfg: PretrainFlags) -> tuple[pathlib.Path, autoencoder.AEConfig]:
  """(the directory holding --pretrained's autoencoder, the configuration it
  was trained with), after checking it fits this run (before anything is
  written)."""
  src, model, rec = find_autoencoder(cfg.pretrained)
  check_compatible(cfg, src, rec)
  return src, source_ae_config(src, model, rec)


def restore_pretrained(source: tuple[pathlib.Path, autoencoder.AEConfig], data: base.Data,
                       key) -> autoencoder.AEState:
  """The autoencoder of `pretrained_source`'s answer."""
  src, config = source
  like = autoencoder.init_state(named(key, "init"), config, data.train_x[:1])
  try:
    return training.restore_state(src, like, warn=lambda m: print(f"unsupjax: warning: {m}",
                                                                 file=sys.stderr))
  except Exception as e:  # noqa: BLE001 (orbax raises many kinds)
    raise UsageError(f"--pretrained: the checkpoint in {src} does not fit this model: "
                     f"{type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------
# The flows of `unsupjax train`.


def _driver(task: base.Task) -> base.Task:
  """`task` for base.train, the one driver (its single fit)."""
  return dataclasses.replace(task, train=None)


def _saved_epochs(workdir: pathlib.Path) -> list[int]:
  return (training.checkpoint_epochs(workdir)
          if (workdir / training.CHECKPOINT_DIR).is_dir() else [])


def _one_process() -> None:
  if jax.process_count() > 1:
    raise UsageError(f"--num-processes: deep clustering clusters every example in one "
                     f"process (its targets and k-means see the whole data set); got "
                     f"{jax.process_count()} processes. Use --parallel on one host's "
                     f"devices instead")


def _load_all(cfg) -> base.Data:
  """`load`, after refusing several processes; checks k against the data."""
  _one_process()
  data = load(cfg)
  n_clusters(cfg, data)
  return data


def _finish(task: base.Task, cfg, workdir: pathlib.Path, summary: dict, t_start: float,
            monitor: watch.Monitor, status_epoch: Any) -> dict:
  summary["wall_seconds"] = time.perf_counter() - t_start
  if jax.process_index() == 0:
    base.write_json(workdir / base.SUMMARY_FILE, summary)
  monitor.finish({**summary, "epochs": status_epoch})
  what = (f"ACC {summary['acc']:.4f}, NMI {summary['nmi']:.4f}, ARI {summary['ari']:.4f}"
          if "acc" in summary else "no labels to score against")
  print(f"{task.name} on {cfg.dataset} ({summary['n_examples']} examples, "
        f"k={summary['clusters']}): {what} ({summary['wall_seconds']:.1f} s) -> {workdir}")
  return summary


def train_autoencoder(task: base.Task, cfg: PretrainFlags) -> dict:
  """ae-kmeans, n2d: base.train (the autoencoder's fit, then the clustering
  as its report), or with --pretrained the clustering alone."""
  if task.name == "n2d":
    import importlib.util
    if importlib.util.find_spec("umap") is None:
      raise UsageError("n2d: needs umap-learn: pip install 'unsupjax[cluster]'")
  if cfg.pretrained is None:
    return base.train(_driver(task), cfg)
  t_start = time.perf_counter()
  cfg = base.resolve(task, cfg)
  base.init_parallel(cfg)
  task.make_model_config(cfg)
  source = pretrained_source(cfg)
  workdir, previous = base.check_workdir(task, cfg)
  data = task.load(cfg)
  base.check_data(task, cfg, data)
  base.prepare_workdir(task, cfg, workdir, previous)
  if previous is not None and cfg.overwrite:
    base.clear(workdir, OUTPUTS)
  key = run_key(cfg.seed)
  ae_state = restore_pretrained(source, data, key)
  monitor = watch.Monitor(workdir, task.name, cfg)
  with base.watched(monitor):
    values = task.report(base.Run(task, cfg, data, key, workdir, ae_state, None))
  summary = {"model": task.name, "dataset": cfg.dataset, "config": config_lib.to_record(cfg),
             "epochs": 0, "pretrained": cfg.pretrained,
             "autoencoder": config_lib.to_record(ae_state.config),
             "device": base.device_description(), **values}
  return _finish(task, cfg, workdir, summary, t_start, monitor, 0)


def pretrain_config(cfg: DECFlags) -> AEKMeansFlags:
  """The ae-kmeans run in WORKDIR/pretrain that is dec/idec's first phase:
  the same settings; --resume continues it, or starts it over when it had
  saved nothing."""
  sub = pathlib.Path(cfg.workdir) / PRETRAIN_DIR
  resume = cfg.resume and bool(_saved_epochs(sub))
  return base.derive(AEKMeansFlags, cfg, workdir=str(sub), epochs=None, pretrained=None,
                     resume=resume, overwrite=(cfg.overwrite or cfg.resume) and not resume)


def train_clustering(task: base.Task, cfg: DECFlags) -> dict:
  """dec, idec: the autoencoder (pretrained in WORKDIR/pretrain, or
  --pretrained's), then the clustering phase in WORKDIR."""
  t_start = time.perf_counter()
  cfg = base.resolve(task, cfg)
  mode = base.init_parallel(cfg)
  task.make_model_config(cfg)
  source = pretrained_source(cfg) if cfg.pretrained is not None else None
  data = task.load(cfg)
  base.check_data(task, cfg, data)
  dcfg = dec_config(cfg, data)
  # The clustering phase's loop epochs (and checkpoints) are its refreshes.
  loops = dc.refresh_count(len(data.train_x), cfg.batch_size, dcfg.update_interval, cfg.epochs)
  here = dataclasses.replace(cfg, epochs=loops)
  workdir = pathlib.Path(cfg.workdir)
  if cfg.resume and base.read_record(workdir) is not None and not _saved_epochs(workdir):
    # Stopped before the clustering phase saved anything: its pretraining
    # resumes (below), the clustering phase starts over.
    here = dataclasses.replace(here, resume=False, overwrite=True)
  workdir, previous = base.check_workdir(task, here)
  pre = None
  if cfg.pretrained is None:
    pre = pretrain_config(cfg)
    base.check_workdir(AE_KMEANS, base.resolve(AE_KMEANS, pre))
  base.prepare_workdir(task, dataclasses.replace(cfg, resume=here.resume,
                                                 overwrite=here.overwrite), workdir, previous)
  if previous is not None and here.overwrite:
    # With --pretrained, an earlier run's pretrain/ is not this run's autoencoder.
    base.clear(workdir, OUTPUTS + ((PRETRAIN_DIR,) if cfg.overwrite and cfg.pretrained else ()))
  if cfg.compile_cache:
    training.enable_compilation_cache(pathlib.Path(cfg.cache_dir) / "jax")
  key = run_key(cfg.seed)

  # 1. The autoencoder.
  if pre is not None:
    pre_summary = base.train(_driver(AE_KMEANS), pre)
    ae_state, _ = base.restore(AE_KMEANS, base.resolve(AE_KMEANS, pre), data,
                               pathlib.Path(pre.workdir), None)
    pretrain_seconds = pre_summary["pretrain_seconds"]
  else:
    ae_state = restore_pretrained(source, data, key)
    pretrain_seconds = 0.0

  # 2. DEC / IDEC from it, k-means on its embedding the start.
  y = labels_of(data)
  monitor = watch.Monitor(workdir, task.name, here)
  t0 = time.perf_counter()
  with base.watched(monitor):
    state = dec_model.init_state(named(key, "kmeans"), dcfg, ae_state, data.train_x,
                                 n_init=KMEANS_INIT)
    start = scores(y, state.labels)
    result, _ = dc.fit(state, data.train_x, key=named(key, "clustering"),
                       max_epochs=cfg.epochs, batch_size=cfg.batch_size,
                       on_refresh=lambda labels: {"phase": task.name, **scores(y, labels)},
                       workdir=workdir, resume=here.resume,
                       checkpoint_every=cfg.checkpoint_every, progress=cfg.progress,
                       desc=f"{task.name} {cfg.dataset}", observers=[monitor.observe],
                       progress_keys=runlog.progress_keys(task.name), parallel=mode,
                       model_axis=cfg.model_axis)
    run = base.Run(task, cfg, data, key, workdir, result.state, result)
    summary = base.fit_summary(task, cfg, result, t_start)
    summary.update(task.report(run))
  last = result.history[-1] if result.history else {}
  per_epoch = len(data.train_x) // cfg.batch_size
  summary.update({
      **{f"init_kmeans_{m}": v for m, v in start.items()},
      "epochs": int(result.state.step) / per_epoch,      # passes over the data
      "refreshes": result.last_epoch, "cluster_steps": int(result.state.step),
      "stopped_by_tol": bool(last.get("delta_label") is not None
                             and last["delta_label"] < dcfg.tol),
      "update_interval": dcfg.update_interval, "pretrain_seconds": pretrain_seconds,
      "cluster_seconds": time.perf_counter() - t0, "pretrained": cfg.pretrained,
      "autoencoder": config_lib.to_record(ae_state.config)})
  return _finish(task, cfg, workdir, summary, t_start, monitor, result.last_epoch)


def _task(name: str, help_: str, config: type, method_model, train: Callable, **hooks) -> base.Task:
  return base.Task(name=name, help=help_, config=config, model=method_model,
                  report=make_report(name), model_config=ae_config, load=_load_all,
                  evaluate=make_evaluate(name), train=train, **hooks)


AE_KMEANS = _task("ae-kmeans", "autoencoder (DEC's d-500-500-2000-10 by default), then "
                  "k-means on its embedding", AEKMeansFlags, autoencoder, train_autoencoder,
                  fit_kwargs=pretrain_fit_kwargs)
N2D = _task("n2d", "N2D: autoencoder embedding -> UMAP -> Gaussian mixture (needs "
            "umap-learn)", N2DFlags, autoencoder, train_autoencoder,
            fit_kwargs=pretrain_fit_kwargs)
DEC = _task("dec", "Deep Embedded Clustering: autoencoder, then KL(p || q) on Student-t "
            "assignments to learned centres", DECFlags, dec_model, train_clustering,
            init=init_dec)
IDEC = _task("idec", "Improved DEC: autoencoder, then L_r + gamma * KL(p || q) (the "
             "decoder keeps the embedding's local structure)", IDECFlags, dec_model,
             train_clustering, init=init_dec)
