"""Offline datasets for the Decision Transformer, made the way D4RL made its Gym-MuJoCo ones (Fu et
al., arXiv 2004.07219, Section 5 and Appendix C), from the project's own SAC
(`reproductions.sac.sac`), and stored and read in the Minari format (the `minari` package, its
`arrow` storage):

- `random`:        episodes of a uniformly random policy;
- `medium`:        episodes of a SAC policy stopped early, at about a third of the expert's
                   normalised score (actions sampled from the stochastic policy, as D4RL's);
- `medium-replay`: every episode SAC's replay buffer held until that early stop;
- `medium-expert`: the medium episodes and as many episodes of the fully trained SAC policy;
- `expert`:        episodes of the fully trained SAC policy.

The normalised score is D4RL's, 100 * (R - R_random) / (R_expert - R_random), with our own
references: R_random the mean return of the uniform random policy and R_expert the mean return of
the fully trained SAC policy (stochastic, as its data), each over `reference_episodes` episodes on
reset seeds of their own. Both are written into every dataset's Minari metadata (`ref_min_score`,
`ref_max_score`), so `minari.get_normalized_score` gives the same number.

Generation is deterministic (its own seeds, the global random states put back afterwards) and
cached under `<data_root>/<key>/`, the key a hash of the settings that decide the data: a run finds
the datasets a former run made, or makes them again to the same bits. `provenance.json` beside the
datasets names the agent, its steps, and each dataset's sha256 over its arrays (episode by episode).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from evals.tasks.envs import box_bounds, episode_seed, make_env
from reproductions.common.replay import ReplayBuffer
from reproductions.sac import sac

QUALITIES = ("random", "medium", "medium-replay", "medium-expert", "expert")
FORMAT_VERSION = 1  # bump when the generation below changes what it writes


@dataclass(frozen=True)
class Generation:
    """What decides the data (the cache key hashes these)."""

    env_id: str = "Pendulum-v1"
    expert_steps: int = 20_000          # SAC's environment steps for the expert policy
    medium_score: float = 33.3          # D4RL's early stop: the first snapshot at this normalised score is "medium"
    snapshot_every: int = 400           # SAC's steps between snapshots (candidates for the early stop)
    snapshot_episodes: int = 5          # episodes that score a snapshot
    learning_starts: int = 1_000        # SAC's uniformly random steps before learning (its Config's)
    sac_hidden: int = 64                # SAC's hidden width (the paper's 256 costs 10x more here)
    sac_batch: int = 128                # SAC's minibatch
    episodes: int = 100                 # episodes of the random, medium and expert datasets each
    reference_episodes: int = 50        # episodes behind R_random and R_expert
    seed: int = 0                       # the generation's seed (SAC, the resets, the sampled actions)

    def key(self) -> str:
        text = json.dumps(asdict(self) | {"format": FORMAT_VERSION}, sort_keys=True)
        return f"{self.env_id.replace('/', '_')}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass
class Episode:
    observations: np.ndarray   # (T + 1, obs_dim): the last is the observation after the final step
    actions: np.ndarray        # (T, act_dim)
    rewards: np.ndarray        # (T,)
    terminations: np.ndarray   # (T,) bool
    truncations: np.ndarray    # (T,) bool

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())


# -- the rollouts ---------------------------------------------------------------------------------
def rollout(env, act, seed: int) -> Episode:
    """One episode from reset seed `seed`; `act(obs) -> action` in the env's units."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terms, truncs = [obs], [], [], [], []
    done = False
    while not done:
        a = np.asarray(act(obs), dtype=np.float32)
        obs, r, terminated, truncated, _ = env.step(a)
        observations.append(obs)
        actions.append(a)
        rewards.append(float(r))
        terms.append(bool(terminated))
        truncs.append(bool(truncated))
        done = terminated or truncated
    return Episode(np.asarray(observations, dtype=np.float32), np.asarray(actions, dtype=np.float32),
                   np.asarray(rewards, dtype=np.float64), np.asarray(terms), np.asarray(truncs))


def rollouts(env_id: str, act, seeds: list[int]) -> list[Episode]:
    env = make_env(env_id)
    try:
        return [rollout(env, act, s) for s in seeds]
    finally:
        env.close()


def uniform_policy(env_id: str, seed: int):
    env = make_env(env_id)
    low, high = box_bounds(env.action_space)
    env.close()
    rng = np.random.default_rng(seed)
    return lambda obs: rng.uniform(low, high).astype(np.float32)


def sampled_policy(agent: sac.SAC):
    """SAC's stochastic policy (actions sampled, as D4RL collected its data), drawing from torch's
    global generator (seeded by the generation)."""
    return lambda obs: agent.to_env(agent.act_normalized(obs, deterministic=False))


def train_sac(g: Generation) -> tuple[sac.SAC, dict[int, dict], list[tuple[int, Episode]], dict]:
    """SAC (`reproductions.sac`'s agent and update, its loop with the episodes recorded) for
    `expert_steps` steps: the final policy, snapshots of the actor every `snapshot_every` steps,
    and every training episode with the step at which it ended (the replay buffer's contents)."""
    cfg = sac.Config(env_id=g.env_id, total_steps=g.expert_steps, learning_starts=g.learning_starts,
                     hidden=g.sac_hidden, batch_size=g.sac_batch)
    env = make_env(g.env_id)
    agent = sac.build(cfg)
    learner = sac.Learner(agent, cfg)
    obs_dim, act_dim = int(np.prod(env.observation_space.shape)), len(agent.act_low)
    buffer = ReplayBuffer(cfg.total_steps, (obs_dim,), (act_dim,), seed=g.seed)
    explore = torch.Generator().manual_seed(g.seed)
    snapshots, episodes, log = {}, [], {"train_returns": []}
    step, episode = 0, 0
    obs, _ = env.reset(seed=episode_seed(g.seed, episode))
    current = {"obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
    while step < cfg.total_steps:
        if step < cfg.learning_starts:
            a = torch.rand(act_dim, generator=explore).numpy() * 2.0 - 1.0
        else:
            a = agent.act_normalized(obs, deterministic=False)
        env_a = agent.to_env(a).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(env_a)
        buffer.add(obs, a, reward, next_obs, terminated)
        for k, v in (("obs", next_obs), ("act", env_a), ("rew", float(reward)), ("term", terminated),
                     ("trunc", truncated)):
            current[k].append(v)
        obs, step = next_obs, step + 1
        if step > cfg.learning_starts:
            learner.update(buffer.sample(cfg.batch_size))
        if terminated or truncated:
            ep = Episode(np.asarray(current["obs"], dtype=np.float32), np.asarray(current["act"], dtype=np.float32),
                         np.asarray(current["rew"], dtype=np.float64), np.asarray(current["term"]),
                         np.asarray(current["trunc"]))
            log["train_returns"].append(ep.ret)
            episodes.append((step, ep))
            episode += 1
            obs, _ = env.reset(seed=episode_seed(g.seed, episode))
            current = {"obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
        if step % g.snapshot_every == 0 and step > g.learning_starts:
            snapshots[step] = {k: v.clone() for k, v in agent.actor.state_dict().items()}
    env.close()
    return agent, snapshots, episodes, log


def early_stop(g: Generation, snapshots: dict[int, dict], r_min: float, r_max: float) -> tuple[sac.SAC, int, list]:
    """D4RL's early stop: the first snapshot whose sampled-action return, over `snapshot_episodes`
    episodes, reaches `medium_score` (normalised); its policy and step, and every snapshot's score."""
    cfg = sac.Config(env_id=g.env_id, hidden=g.sac_hidden)
    policy = sac.build(cfg)
    seeds = [episode_seed(g.seed + 4, i) for i in range(g.snapshot_episodes)]
    scores = []
    for step, actor in sorted(snapshots.items()):
        policy.actor.load_state_dict(actor)
        ret = float(np.mean([e.ret for e in rollouts(g.env_id, sampled_policy(policy), seeds)]))
        scores.append((step, 100 * (ret - r_min) / (r_max - r_min)))
        if scores[-1][1] >= g.medium_score:
            return policy, step, scores
    raise ValueError(f"no SAC snapshot reached the medium score {g.medium_score} within {g.expert_steps} steps "
                     f"(scores by step: {scores})")


# -- Minari storage -------------------------------------------------------------------------------
def content_sha256(episodes: list[Episode]) -> str:
    """sha256 over the arrays, episode by episode (observations, actions, rewards, terminations,
    truncations as little-endian float32 / float64 / bool bytes): the data, not the file layout."""
    h = hashlib.sha256()
    for e in episodes:
        for a, dt in ((e.observations, "<f4"), (e.actions, "<f4"), (e.rewards, "<f8"), (e.terminations, "?"),
                      (e.truncations, "?")):
            h.update(np.ascontiguousarray(a, dtype=dt).tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def minari_root(path: Path):
    """Minari finds its datasets under MINARI_DATASETS_PATH: point it at `path` for the block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def write_minari(root: Path, dataset_id: str, env_id: str, episodes: list[Episode], ref_min: float, ref_max: float,
                 description: str) -> None:
    import minari
    from minari.data_collector import EpisodeBuffer

    env = make_env(env_id)
    obs_dtype, act_dtype = env.observation_space.dtype, env.action_space.dtype  # Minari stores the spaces' dtypes
    env.close()
    buffers = [EpisodeBuffer(id=i, observations=e.observations.astype(obs_dtype), actions=e.actions.astype(act_dtype),
                             rewards=list(e.rewards),
                             terminations=list(e.terminations), truncations=list(e.truncations), infos={})
               for i, e in enumerate(episodes)]
    with minari_root(Path(root).resolve()):
        minari.create_dataset_from_buffers(dataset_id, buffers, env=env_id, algorithm_name="SAC (reproductions.sac)",
                                           author="repro", author_email="repro@localhost", eval_env=env_id, code_permalink="reproductions/decision_transformer/datasets.py",
                                           ref_min_score=float(ref_min), ref_max_score=float(ref_max),
                                           description=description, data_format="arrow")


def dataset_path(root: Path, dataset_id: str) -> Path:
    return Path(root) / dataset_id / "data"


def read_minari(path: Path) -> tuple[list[Episode], dict]:
    """The episodes of a Minari dataset folder (`.../<dataset id>/data`, arrow or hdf5) and its metadata."""
    import minari

    ds = minari.MinariDataset(str(path))
    episodes = []
    for e in ds.iterate_episodes():
        episodes.append(Episode(np.asarray(e.observations, dtype=np.float32), np.asarray(e.actions, dtype=np.float32),
                                np.asarray(e.rewards, dtype=np.float64), np.asarray(e.terminations, dtype=bool),
                                np.asarray(e.truncations, dtype=bool)))
    return episodes, dict(ds.storage.metadata)


# -- the whole set, cached ------------------------------------------------------------------------
def _namespace(g: Generation) -> str:
    return "repro/" + g.env_id.split("-")[0].lower()


def dataset_id(g: Generation, quality: str) -> str:
    return f"{_namespace(g)}/{quality}-v0"


def generate(g: Generation, folder: Path) -> dict:
    """Train SAC, roll out the policies, write the five datasets and `provenance.json` under `folder`."""
    expert_agent, snapshots, train_episodes, log = train_sac(g)
    ref_seeds = [episode_seed(g.seed + 1, i) for i in range(g.reference_episodes)]
    random_ref = rollouts(g.env_id, uniform_policy(g.env_id, g.seed + 2), ref_seeds)
    expert_ref = rollouts(g.env_id, sampled_policy(expert_agent), ref_seeds)
    r_min = float(np.mean([e.ret for e in random_ref]))
    r_max = float(np.mean([e.ret for e in expert_ref]))
    medium_agent, medium_steps, snapshot_scores = early_stop(g, snapshots, r_min, r_max)
    replay = [e for end, e in train_episodes if end <= medium_steps]
    seeds = {q: [episode_seed(g.seed + 10 + i, j) for j in range(g.episodes)] for i, q in enumerate(("random", "medium", "expert"))}
    data = {"random": rollouts(g.env_id, uniform_policy(g.env_id, g.seed + 3), seeds["random"]),
            "medium": rollouts(g.env_id, sampled_policy(medium_agent), seeds["medium"]),
            "expert": rollouts(g.env_id, sampled_policy(expert_agent), seeds["expert"]),
            "medium-replay": replay}
    data["medium-expert"] = data["medium"] + data["expert"]
    agent = {"random": "uniform random actions",
             "medium": f"reproductions.sac SAC after {medium_steps} env steps, sampled actions",
             "medium-replay": f"reproductions.sac SAC's episodes during its first {medium_steps} env steps "
                              f"({g.learning_starts} uniformly random, then SAC's sampled actions)",
             "expert": f"reproductions.sac SAC after {g.expert_steps} env steps, sampled actions"}
    agent["medium-expert"] = f"medium and expert together ({agent['medium']}; {agent['expert']})"
    prov = {"generation": asdict(g), "format": FORMAT_VERSION, "ref_min_score": r_min, "ref_max_score": r_max,
            "references": f"mean return over {g.reference_episodes} episodes: uniform random policy (min), "
                          f"the expert SAC policy with sampled actions (max)",
            "sac_train_returns": log["train_returns"], "medium_steps": medium_steps,
            "snapshot_scores": snapshot_scores, "datasets": {}}
    score = lambda r: 100 * (r - r_min) / (r_max - r_min)  # noqa: E731
    for q in QUALITIES:
        eps = data[q]
        write_minari(folder, dataset_id(g, q), g.env_id, eps, r_min, r_max, f"D4RL-style '{q}' data: {agent[q]}")
        returns = np.array([e.ret for e in eps])
        prov["datasets"][q] = {"dataset_id": dataset_id(g, q), "agent": agent[q],
                               "env_steps": int(sum(len(e.rewards) for e in eps)), "episodes": len(eps),
                               "mean_return": float(returns.mean()), "mean_score": float(score(returns).mean()),
                               "max_score": float(score(returns).max()), "sha256": content_sha256(eps)}
    (folder / "provenance.json").write_text(json.dumps(prov, indent=1))
    return prov


@contextlib.contextmanager
def _rng_kept():
    """Run the block with the global torch / numpy / random states put back afterwards, so making
    the data (or finding it cached) leaves the run's own random streams exactly as they were."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def ensure(g: Generation, data_root: str | Path) -> Path:
    """The folder holding the generation's datasets, made if absent (one maker at a time: a lock
    file; written to a temporary folder, then renamed)."""
    root = Path(data_root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / g.key()
    if (folder / "provenance.json").exists():
        return folder
    with open(root / f"{g.key()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "provenance.json").exists():
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{g.key()}-", dir=root))
        try:
            with _rng_kept():
                torch.manual_seed(g.seed)
                generate(g, tmp)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def provenance(folder: Path) -> dict:
    return json.loads((Path(folder) / "provenance.json").read_text())
