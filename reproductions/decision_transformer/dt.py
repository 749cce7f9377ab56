"""Decision Transformer (Chen et al., "Decision Transformer: Reinforcement Learning via Sequence
Modeling", arXiv 2106.01345), read top to bottom: returns-to-go, the token sequence and its
embeddings, the causal GPT (`reproductions.transformer.gpt`), the action-regression loss, the
return-conditioned rollout; then the baselines of its Table 3 (behaviour cloning, %BC) and the
training loop that serves all three.

The paper's definitions (Section 3 and Algorithm 1):
- returns-to-go  R_hat_t = sum_{t'=t}^{T} r_{t'}  (undiscounted; scaled by `return_scale` as the
  authors' code does);
- the trajectory as tokens, eq. (2):  tau = (R_hat_1, s_1, a_1, R_hat_2, s_2, a_2, ..., R_hat_T, s_T, a_T),
  the last K timesteps of it (3K tokens);
- each modality embedded by its own linear layer, plus an embedding of the episodic timestep t
  (one per timestep, shared by its three tokens: "different than the standard positional
  embedding used by transformers, as one timestep corresponds to three tokens"), then a
  LayerNorm; the GPT has no positional embedding of its own (`NoPositions`);
- the action a_t predicted from the GPT's output at the s_t token (a linear head, tanh for
  continuous actions), trained by mean-squared error on the dataset's actions (Algorithm 1,
  "loss = mean((a_preds - a)**2)");
- evaluation: R_hat_1 is the desired target return; after each step R_hat_{t+1} = R_hat_t - r_t
  (Algorithm 1's "decrement returns-to-go with reward").

Baselines (Section 5.3, Table 3): behaviour cloning (BC), an MLP regressing the action on the
state; %BC, the same on the top X% of timesteps of the dataset ordered by episode return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from evals.contract import SafetensorsModule
from evals.tasks.atari import env_required_data
from evals.tasks.envs import make_env
from reproductions.decision_transformer import datasets as D
from reproductions.transformer.gpt import GPT, GPTConfig, NoPositions
from reproductions.transformer.layers import FeedForward


@dataclass
class Config:
    """The defaults are the paper's Gym-MuJoCo settings (Appendix A, Table 8)."""

    env_id: str = "Hopper-v5"
    method: str = "dt"                 # "dt" (Decision Transformer) or "bc" (behaviour cloning, MLP)
    bc_percent: float = 100.0          # BC on the top X% of timesteps by episode return (%BC); 100: plain BC
    # data: our own SAC's D4RL-style datasets ("generate"), or a Minari dataset in the local cache ("minari")
    data_source: str = "generate"
    dataset: str = "medium"            # "generate": a quality of datasets.QUALITIES; "minari": a dataset id
    data_root: str = "runs/decision_transformer/datasets"   # the cache of generated data
    minari_root: str = ""              # "minari": the datasets' root ("" : MINARI_DATASETS_PATH or ~/.minari/datasets)
    gen_expert_steps: int = 20_000     # datasets.Generation's fields (generate only)
    gen_medium_score: float = 33.3
    gen_snapshot_every: int = 400
    gen_learning_starts: int = 1_000
    gen_sac_hidden: int = 64
    gen_sac_batch: int = 128
    gen_episodes: int = 100
    gen_reference_episodes: int = 50
    gen_seed: int = 0
    # the model (Table 8)
    context: int = 20                  # K, timesteps of context
    n_layer: int = 3
    n_head: int = 1
    n_embd: int = 128
    dropout: float = 0.1
    max_ep_len: int = 1000             # timesteps the timestep embedding covers
    return_scale: float = 1000.0       # returns-to-go are divided by this (the authors' code: 1000 for Hopper)
    # optimisation (Table 8)
    steps: int = 100_000               # gradient steps
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 10_000         # linear warm-up of the learning rate
    grad_clip: float = 0.25
    # the training curve: evaluation episodes at the target return every `eval_every` steps
    target_score: float = 100.0        # the conditioning target, as a normalised score (100: the expert reference)
    target_return: float | None = None # or as a raw return (the paper's: 3600 Hopper, 12000 HalfCheetah, 5000 Walker)
    eval_every: int = 10_000
    eval_episodes: int = 5
    log_every: int = 100


# -- returns-to-go and the token sequence ---------------------------------------------------------
def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """R_hat_t = sum_{t' >= t} r_{t'} (undiscounted), for every t of one episode."""
    return np.cumsum(np.asarray(rewards, dtype=np.float64)[::-1])[::-1].copy()


def interleave(r: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Eq. (2)'s order: (B, T, h) embeddings of returns, states, actions -> (B, 3T, h) tokens
    R_1, s_1, a_1, R_2, s_2, a_2, ..."""
    return torch.stack([r, s, a], dim=2).flatten(1, 2)


def relu_ffn(cfg: GPTConfig, linear=nn.Linear) -> nn.Module:
    """The authors' GPT-2 configuration uses ReLU (activation_function='relu'), not GPT-2's GELU."""
    return FeedForward(cfg.n_embd, cfg.d_ff, F.relu, linear, cfg.bias, cfg.dropout)


class DecisionTransformer(nn.Module):
    """Embeddings of (R_hat, s, a) plus a timestep embedding, the causal GPT trunk, the action head."""

    def __init__(self, state_dim: int, act_dim: int, cfg: Config):
        super().__init__()
        h = cfg.n_embd
        self.state_dim, self.act_dim, self.context = state_dim, act_dim, cfg.context
        # The GPT of reproductions/transformer, without positions (the timestep embedding replaces them);
        # its (tied) token embedding and language-model head are dropped: the inputs are embedded above.
        self.gpt = GPT(GPTConfig(vocab_size=1, block_size=3 * cfg.context, n_layer=cfg.n_layer, n_head=cfg.n_head,
                                 n_embd=h, dropout=cfg.dropout, bias=True), position=NoPositions(), ffn=relu_ffn)
        self.gpt.wte, self.gpt.lm_head = None, None
        self.embed_timestep = nn.Embedding(cfg.max_ep_len, h)
        self.embed_return = nn.Linear(1, h)
        self.embed_state = nn.Linear(state_dim, h)
        self.embed_action = nn.Linear(act_dim, h)
        self.embed_ln = nn.LayerNorm(h)
        self.predict_action = nn.Sequential(nn.Linear(h, act_dim), nn.Tanh())

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The GPT's blocks and final LayerNorm on embeddings x (B, L, h): its forward without the
        token embedding and head."""
        positions = torch.arange(x.size(1), device=x.device)
        h = self.gpt.drop(x)
        for block in self.gpt.blocks:
            h = block(h, lambda q, k: self.gpt.position.rotate(q, k, positions))
        return self.gpt.ln_f(h)

    def forward(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
        """Predicted actions (B, T, act_dim), the one at t from the s_t token (it sees R_1..R_t,
        s_1..s_t, a_1..a_{t-1}). rtg (B, T, 1), states (B, T, state_dim), actions (B, T, act_dim),
        timesteps (B, T) long. Sequences padded on the right need no attention mask: causal
        attention never lets a real token see a later pad."""
        time = self.embed_timestep(timesteps)
        tokens = interleave(self.embed_return(rtg) + time, self.embed_state(states) + time,
                            self.embed_action(actions) + time)
        out = self.trunk(self.embed_ln(tokens))
        b, t = states.shape[:2]
        state_tokens = out.view(b, t, 3, -1)[:, :, 1]
        return self.predict_action(state_tokens)


def action_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Algorithm 1's loss, mean((a_pred - a)^2), over the real (unpadded) timesteps: mask (B, T)."""
    err = (predicted - target).pow(2).mean(-1)
    return (err * mask).sum() / mask.sum()


class MLPPolicy(nn.Module):
    """BC's policy: an MLP of `n_layer` hidden layers of `n_embd` ReLU units on the state, tanh out
    (the authors' MLPBCModel with a context of one state)."""

    def __init__(self, state_dim: int, act_dim: int, cfg: Config):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(state_dim, cfg.n_embd)]
        for _ in range(cfg.n_layer - 1):
            layers += [nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.n_embd, cfg.n_embd)]
        layers += [nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.n_embd, act_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net(states)


# -- the offline data -----------------------------------------------------------------------------
def generation(cfg: Config) -> D.Generation:
    return D.Generation(env_id=cfg.env_id, expert_steps=cfg.gen_expert_steps, medium_score=cfg.gen_medium_score,
                        snapshot_every=cfg.gen_snapshot_every,
                        learning_starts=cfg.gen_learning_starts, sac_hidden=cfg.gen_sac_hidden,
                        sac_batch=cfg.gen_sac_batch, episodes=cfg.gen_episodes,
                        reference_episodes=cfg.gen_reference_episodes, seed=cfg.gen_seed)


def minari_folders(cfg: Config) -> list[Path]:
    """The folders of the Minari dataset(s) `dataset` names ('+' joins several: D4RL's medium-expert
    is its medium and expert data together), under `minari_root` or Minari's own local cache."""
    out = []
    for name in cfg.dataset.split("+"):
        if cfg.minari_root:
            out.append(D.dataset_path(Path(cfg.minari_root), name))
        else:
            from minari.storage import get_dataset_path
            out.append(Path(get_dataset_path(name)) / "data")
    return out


def load_dataset(cfg: Config, make: bool = True) -> tuple[list[D.Episode], dict]:
    """The run's episodes and a provenance dict (agent, steps, sha256, the references)."""
    if cfg.data_source == "generate":
        if cfg.dataset not in D.QUALITIES:
            raise ValueError(f"config field 'dataset': {cfg.dataset!r} is not one of {D.QUALITIES}")
        g = generation(cfg)
        folder = D.ensure(g, cfg.data_root) if make else Path(cfg.data_root) / g.key()
        prov = D.provenance(folder)
        episodes, meta = D.read_minari(D.dataset_path(folder, D.dataset_id(g, cfg.dataset)))
        info = dict(prov["datasets"][cfg.dataset])
        info |= {"generation": prov["generation"], "sac_env_steps": {"medium": prov["medium_steps"], "expert": g.expert_steps}}
    elif cfg.data_source == "minari":
        episodes, meta = [], {}
        for folder in minari_folders(cfg):
            eps, m = D.read_minari(folder)
            episodes += eps
            meta = meta or m  # the references of the first (D4RL's medium-expert keeps the task's references)
        info = {"dataset_id": cfg.dataset, "agent": str(meta.get("algorithm_name", "see the dataset's metadata")),
                "env_steps": int(sum(len(e.rewards) for e in episodes)), "episodes": len(episodes)}
    else:
        raise ValueError(f"config field 'data_source': {cfg.data_source!r} is not 'generate' or 'minari'")
    if meta.get("ref_min_score") is None or meta.get("ref_max_score") is None:
        raise ValueError(f"dataset {cfg.dataset!r} has no ref_min_score / ref_max_score in its Minari metadata")
    info |= {"sha256": D.content_sha256(episodes), "ref_min_score": float(meta["ref_min_score"]),
             "ref_max_score": float(meta["ref_max_score"]), "format": "minari"}
    return episodes, info


def top_percent(episodes: list[D.Episode], percent: float) -> list[D.Episode]:
    """%BC's data (Section 5.3): whole episodes in order of decreasing return, taken until they hold
    at least `percent`% of the dataset's timesteps (the authors' code does the same)."""
    if percent >= 100:
        return list(episodes)
    total = sum(len(e.rewards) for e in episodes)
    order = sorted(range(len(episodes)), key=lambda i: -episodes[i].ret)  # stable: ties keep the data's order
    kept, n = [], 0
    for i in order:
        kept.append(episodes[i])
        n += len(episodes[i].rewards)
        if n >= percent / 100 * total:
            break
    return kept


class Batches:
    """The authors' sampler: an episode drawn with probability proportional to its length, a start
    uniform in it, up to K timesteps from there; shorter windows padded on the right (mask 0)."""

    def __init__(self, episodes: list[D.Episode], state_mean: np.ndarray, state_std: np.ndarray,
                 act_low: np.ndarray, act_high: np.ndarray, cfg: Config, rng: np.random.Generator):
        self.cfg, self.rng = cfg, rng
        self.states = [((e.observations[:-1] - state_mean) / state_std).astype(np.float32) for e in episodes]
        self.actions = [normalise_actions(e.actions, act_low, act_high) for e in episodes]
        self.rtg = [(returns_to_go(e.rewards) / cfg.return_scale).astype(np.float32) for e in episodes]
        lengths = np.array([len(e.rewards) for e in episodes], dtype=np.float64)
        self.p = lengths / lengths.sum()
        self.flat_states = np.concatenate(self.states)
        self.flat_actions = np.concatenate(self.actions)

    def windows(self, n: int) -> dict[str, torch.Tensor]:
        K = self.cfg.context
        sd, ad = self.states[0].shape[1], self.actions[0].shape[1]
        out = {"states": np.zeros((n, K, sd), np.float32), "actions": np.zeros((n, K, ad), np.float32),
               "rtg": np.zeros((n, K, 1), np.float32), "timesteps": np.zeros((n, K), np.int64),
               "mask": np.zeros((n, K), np.float32)}
        for b, i in enumerate(self.rng.choice(len(self.p), size=n, p=self.p)):
            si = int(self.rng.integers(0, len(self.rtg[i])))
            t = min(K, len(self.rtg[i]) - si)
            out["states"][b, :t] = self.states[i][si:si + t]
            out["actions"][b, :t] = self.actions[i][si:si + t]
            out["rtg"][b, :t, 0] = self.rtg[i][si:si + t]
            out["timesteps"][b, :t] = np.minimum(np.arange(si, si + t), self.cfg.max_ep_len - 1)
            out["mask"][b, :t] = 1.0
        return {k: torch.from_numpy(v) for k, v in out.items()}

    def transitions(self, n: int) -> dict[str, torch.Tensor]:
        idx = self.rng.integers(0, len(self.flat_states), n)
        return {"states": torch.from_numpy(self.flat_states[idx]), "actions": torch.from_numpy(self.flat_actions[idx])}


def normalise_actions(a: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return (2.0 * (a - low) / (high - low) - 1.0).astype(np.float32)


# -- the agent ------------------------------------------------------------------------------------
class OfflineAgent(SafetensorsModule):
    """A Decision Transformer or a BC policy with what acting needs: the dataset's state
    statistics, the action box, the normalisation references. Acts return-conditioned (DT) or not
    (BC) through `begin_episode`; `act` is the plain Actor (DT conditioned on `target_score`)."""

    def __init__(self, cfg: Config, state_dim: int, act_low: np.ndarray, act_high: np.ndarray):
        super().__init__()
        self.cfg = cfg
        act_dim = len(act_low)
        self.model = DecisionTransformer(state_dim, act_dim, cfg) if cfg.method == "dt" else MLPPolicy(state_dim, act_dim, cfg)
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.register_buffer("act_low", torch.as_tensor(act_low, dtype=torch.float32))
        self.register_buffer("act_high", torch.as_tensor(act_high, dtype=torch.float32))
        self.register_buffer("refs", torch.tensor([0.0, 1.0], dtype=torch.float64))  # R_random, R_expert
        self.data_provenance: dict[str, Any] = {}

    @property
    def reference_returns(self) -> dict[str, float]:
        return {"random": float(self.refs[0]), "expert": float(self.refs[1])}

    @property
    def conditioned(self) -> bool:
        return self.cfg.method == "dt"

    def target_return(self, score: float) -> float:
        """The raw return whose normalised score is `score`."""
        lo, hi = float(self.refs[0]), float(self.refs[1])
        return lo + score / 100.0 * (hi - lo)

    def goal(self) -> float:
        """The configured conditioning target as a raw return."""
        if self.cfg.target_return is not None:
            return float(self.cfg.target_return)
        return self.target_return(self.cfg.target_score)

    def _state(self, obs: np.ndarray) -> torch.Tensor:
        dev = self.state_mean.device
        return (torch.as_tensor(np.asarray(obs, dtype=np.float32), device=dev) - self.state_mean) / self.state_std

    def _to_env(self, a: torch.Tensor) -> np.ndarray:
        low, high = self.act_low, self.act_high
        return (low + (a + 1.0) * 0.5 * (high - low)).cpu().numpy()

    def begin_episode(self, target_return: float | None) -> Callable[[np.ndarray, float | None], np.ndarray]:
        """A policy for one episode: `policy(obs, last_reward)` (last_reward None at the first
        step). DT keeps the episode's last K timesteps and R_hat_{t+1} = R_hat_t - r_t."""
        self.eval()
        if not self.conditioned:
            return lambda obs, last_reward: self._bc_action(obs)
        K, scale = self.cfg.context, self.cfg.return_scale
        if target_return is None:
            target_return = self.goal()
        hist: dict[str, list] = {"s": [], "a": [], "r": [], "t": []}
        dev = self.state_mean.device
        act_dim = len(self.act_low)

        @torch.no_grad()
        def policy(obs: np.ndarray, last_reward: float | None) -> np.ndarray:
            if hist["r"]:
                hist["r"].append(hist["r"][-1] - float(last_reward) / scale)  # Algorithm 1: decrement by the reward
            else:
                hist["r"].append(float(target_return) / scale)
            hist["s"].append(self._state(obs))
            hist["t"].append(min(len(hist["t"]), self.cfg.max_ep_len - 1))
            s = torch.stack(hist["s"][-K:])[None]
            r = torch.tensor(hist["r"][-K:], device=dev, dtype=torch.float32)[None, :, None]
            t = torch.tensor(hist["t"][-K:], device=dev)[None]
            past = hist["a"][-(s.size(1) - 1):] if s.size(1) > 1 else []
            a = torch.stack(past + [torch.zeros(act_dim, device=dev)])[None]  # the current action is not seen
            pred = self.model(r, s, a, t)[0, -1]
            hist["a"].append(pred)
            return self._to_env(pred)

        return policy

    @torch.no_grad()
    def _bc_action(self, obs: np.ndarray) -> np.ndarray:
        return self._to_env(self.model(self._state(obs)[None])[0])

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The Actor of rl_return: a DT conditioned on `target_score` needs the rewards, which `act`
        does not get; use `begin_episode` (the conditioned_return evaluator does)."""
        if self.conditioned:
            raise TypeError("a Decision Transformer acts through begin_episode(target) (conditioned_return)")
        return self._bc_action(obs)


# -- building and training ------------------------------------------------------------------------
def _check(cfg: Config) -> None:
    if cfg.method not in ("dt", "bc"):
        raise ValueError(f"config field 'method': {cfg.method!r} is not 'dt' or 'bc'")
    if not 0 < cfg.bc_percent <= 100:
        raise ValueError(f"config field 'bc_percent': {cfg.bc_percent} is not in (0, 100]")
    if cfg.method == "dt" and cfg.bc_percent != 100:
        raise ValueError("config field 'bc_percent' applies to method 'bc' only")


def spaces(env_id: str) -> tuple[int, np.ndarray, np.ndarray]:
    env = make_env(env_id)
    try:
        return int(np.prod(env.observation_space.shape)), env.action_space.low.astype(np.float32), \
            env.action_space.high.astype(np.float32)
    finally:
        env.close()


def build(cfg: Config) -> OfflineAgent:
    _check(cfg)
    state_dim, low, high = spaces(cfg.env_id)
    return OfflineAgent(cfg, state_dim, low, high)


def lr_lambda(cfg: Config) -> Callable[[int], float]:
    """The authors' schedule: linear warm-up over `warmup_steps`, then constant."""
    return lambda step: min((step + 1) / cfg.warmup_steps, 1.0)


def evaluate(agent: OfflineAgent, env_id: str, target_return: float | None, seeds: list[int]) -> list[float]:
    """Undiscounted returns of one episode per reset seed (the training curve's evaluation)."""
    env = make_env(env_id)
    returns = []
    try:
        for seed in seeds:
            policy = agent.begin_episode(target_return)
            obs, _ = env.reset(seed=seed)
            total, last, done = 0.0, None, False
            while not done:
                obs, r, terminated, truncated, _ = env.step(policy(obs, last))
                last, total, done = float(r), total + float(r), terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns


def train(cfg: Config, run) -> OfflineAgent:
    agent = build(cfg).to(run.device)
    episodes, info = load_dataset(cfg)
    if cfg.method == "bc":
        episodes = top_percent(episodes, cfg.bc_percent)
        info |= {"bc_percent": cfg.bc_percent, "bc_episodes": len(episodes),
                 "bc_env_steps": int(sum(len(e.rewards) for e in episodes))}
    agent.data_provenance = info
    states = np.concatenate([e.observations[:-1] for e in episodes])
    mean, std = states.mean(0), states.std(0) + 1e-6   # the authors' state normalisation
    agent.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    agent.state_std.copy_(torch.as_tensor(std, dtype=torch.float32))
    agent.refs.copy_(torch.tensor([info["ref_min_score"], info["ref_max_score"]], dtype=torch.float64))
    rng = np.random.default_rng(run.seed)
    data = Batches(episodes, mean, std, agent.act_low.cpu().numpy(), agent.act_high.cpu().numpy(), cfg, rng)
    opt = torch.optim.AdamW(agent.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    target = agent.goal() if agent.conditioned else None
    eval_seeds = [3_000_000 + i for i in range(cfg.eval_episodes)]  # disjoint from the evaluators' resets
    lo, hi = info["ref_min_score"], info["ref_max_score"]
    run.progress(cfg.steps)
    for step in range(1, cfg.steps + 1):
        # ALGO LOGIC: one gradient step of action regression
        agent.model.train()
        if agent.conditioned:
            b = {k: v.to(run.device) for k, v in data.windows(cfg.batch_size).items()}
            pred = agent.model(b["rtg"], b["states"], b["actions"], b["timesteps"])
            loss = action_loss(pred, b["actions"], b["mask"])
        else:  # as many actions per step as the DT's batch regresses
            b = {k: v.to(run.device) for k, v in data.transitions(cfg.batch_size * cfg.context).items()}
            loss = F.mse_loss(agent.model(b["states"]), b["actions"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        # TRY NOT TO MODIFY: curves
        if step % cfg.log_every == 0:
            run.log(step, action_loss=loss.item(), lr=sched.get_last_lr()[0])
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            returns = evaluate(agent, cfg.env_id, target, eval_seeds)
            ret = float(np.mean(returns))
            run.log(step, eval_return=ret, eval_score=100 * (ret - lo) / (hi - lo))
        run.advance()
    agent.eval()
    return agent


def required_data(cfg: Config) -> list[str]:
    missing = env_required_data(cfg)
    if cfg.data_source == "minari":
        for name, folder in zip(cfg.dataset.split("+"), minari_folders(cfg)):
            if not (folder / "metadata.json").exists():
                missing.append(f"Minari dataset {name!r} (looked in {folder}; `minari download {name}` fetches it)")
    return missing


def data_fingerprint(cfg: Config) -> str:
    """The dataset: its source, agent, steps and sha256 over its arrays."""
    if cfg.data_source == "generate":
        folder = Path(cfg.data_root) / generation(cfg).key()
        if not (folder / "provenance.json").exists():
            return f"generated {cfg.dataset} data not made yet ({folder})"
        d = D.provenance(folder)["datasets"][cfg.dataset]
        return (f"{d['dataset_id']} (Minari, {folder}): {d['agent']}; {d['episodes']} episodes, "
                f"{d['env_steps']} steps; sha256 {d['sha256']}")
    folders = minari_folders(cfg)
    if not all((f / "metadata.json").exists() for f in folders):
        return f"Minari {cfg.dataset} (missing under {folders[0].parent.parent})"
    episodes = [e for f in folders for e in D.read_minari(f)[0]]
    return f"Minari {cfg.dataset}: {len(episodes)} episodes; sha256 {D.content_sha256(episodes)}"


def dry_run_step(agent: OfflineAgent, cfg: Config) -> dict[str, float]:
    """One AdamW step of the action loss on a random batch."""
    state_dim, act_dim = agent.state_mean.numel(), agent.act_low.numel()
    g = torch.Generator().manual_seed(0)
    n, K = 4, cfg.context
    s, a = torch.randn(n, K, state_dim, generator=g), torch.rand(n, K, act_dim, generator=g) * 2 - 1
    opt = torch.optim.AdamW(agent.model.parameters(), lr=cfg.lr)
    if agent.conditioned:
        t = torch.randint(0, cfg.max_ep_len, (n, K), generator=g)
        pred = agent.model(torch.randn(n, K, 1, generator=g), s, a, t)
        loss = action_loss(pred, a, torch.ones(n, K))
    else:
        loss = F.mse_loss(agent.model(s[:, 0]), a[:, 0])
    loss.backward()
    opt.step()
    return {"action_loss": loss.item()}
