"""Deep Reinforcement Learning from Human Preferences (Christiano et al., arXiv 1706.03741), read top
to bottom: the reward model and its loss, the synthetic oracle, the choice of queries, the reward
normalisation, then the loop that ties them to PPO.

The paper's equations and rules (Section 2.2):
- (1)  Bradley-Terry preference probability of segment sigma^1 over sigma^2 from the predicted
       rewards summed over each segment:
         P_hat[sigma^1 > sigma^2] = exp sum_t r_hat(o^1_t, a^1_t)
                                    / (exp sum_t r_hat(o^1_t, a^1_t) + exp sum_t r_hat(o^2_t, a^2_t)),
       i.e. sigmoid(R_hat^1 - R_hat^2);
- the reward-model loss, the cross-entropy between (1) and the label distribution mu over {1, 2}
  (2.2.3):  loss(r_hat) = - sum_{(sigma^1, sigma^2, mu) in D} mu(1) log P_hat[sigma^1 > sigma^2]
                                                             + mu(2) log P_hat[sigma^2 > sigma^1],
  with the paper's label noise: "we assume there is a 10% chance that the human responds uniformly
  at random", so P_hat is replaced by 0.9 P_hat + 0.05 (`random_response`);
- an ensemble of predictors, each trained on |D| triples drawn from D with replacement, with a
  fraction 1/e of the data held out for validation and an l2 coefficient adjusted "to keep the
  validation loss between 1.1 and 1.5 times the training loss"; r_hat is the mean of the members,
  each normalised independently to zero mean and a constant standard deviation (2.2.1, 2.2.3);
- ensemble disagreement (2.2.4): sample many candidate pairs, predict each member's preference
  probability, and query the pairs whose predictions vary most across the members;
- the synthetic oracle (3.1): it prefers the segment with the higher true return (an option here
  lets it answer uniformly at random a given share of the time);
- the labelling schedule (Appendix A): a quarter of the labels before RL starts, from segments of a
  random policy, then a rate proportional to c / (T + c) in the environment steps T (c = 2*10^6).

The policy is trained by the project's PPO (`reproductions.ppo.ppo.train`, unchanged): the run
registers a Gymnasium env id whose envs wrap the task (`PreferenceEnv`) so that the learned reward
replaces the environment's reward, whole episodes are cut into segments, and the labels are asked
and the ensemble refit as the schedule gives them; all envs of the run share one `Feedback` (the
labeller, the step count, the normalisation statistics), and `ppo.train` makes its envs by that id.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from gymnasium.wrappers.utils import RunningMeanStd

from evals.contract import SafetensorsModule
from evals.tasks.atari import env_data_fingerprint as data_fingerprint  # noqa: F401  (the contract's data hooks)
from evals.tasks.atari import env_required_data as required_data  # noqa: F401
from evals.tasks.envs import episode_seed, make_env
from reproductions.ppo import ppo as ppo_paper


@dataclass
class Config:
    """The paper's reward-model settings (Appendix A.1) and PPO's MuJoCo settings (PPO paper, Table 3)."""

    env_id: str = "Reacher-v5"
    total_steps: int = 1_000_000
    reward: str = "learned"           # "learned": PPO on r_hat; "true": PPO on the env's reward (the RL baseline)
    labels: int = 700                 # the label budget |D| at the end of training
    queries: str = "disagreement"     # "disagreement" (2.2.4) or "random" pairs
    segment_length: int = 25          # k, steps per trajectory segment (the paper: 1.5 seconds)
    ensemble: int = 3                 # members of the reward-model ensemble
    pretrain_fraction: float = 0.25   # share of the labels asked before RL, on random-policy segments
    label_rate_c: float = 2_000_000   # c of the labelling rate c / (T + c)
    refit_every: int = 10_240         # environment steps between refits (and label requests)
    candidates: int = 10              # candidate pairs sampled per query (disagreement queries)
    label_noise: float = 0.0          # the oracle answers uniformly at random with this probability
    random_response: float = 0.1      # the model's chance of a uniformly random answer (2.2.3: 10%)
    rm_hidden: int = 64               # two hidden layers of 64 leaky-ReLU units (Appendix A.1)
    rm_lr: float = 1e-3
    rm_batch: int = 64                # pairs per minibatch
    rm_steps: int = 200               # Adam steps per member per refit
    rm_pretrain_steps: int = 1000     # Adam steps per member of the first fit, on the labels asked before RL
    l2_init: float = 1e-4             # initial l2 coefficient (on the sum of squared weights)
    l2_factor: float = 1.5            # its adjustment per refit to keep val loss in 1.1-1.5x train loss (1: fixed)
    # PPO (reproductions/ppo/ppo.py's Config; the PPO paper's Table 3 MuJoCo setting)
    num_envs: int = 1
    num_steps: int = 2048
    epochs: int = 10
    minibatch_size: int = 64
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_ratio: float = 0.2
    vf_coef: float = 0.5
    ent_coef: float = 0.0
    max_grad_norm: float | None = 0.5
    hidden: int = 64
    normalize: bool = True            # running observation and return normalisation as VecNormalize (every arm)


# -- the reward model: eq. (1), its loss, the ensemble ----------------------------------------------
def preference_probability(returns_1: torch.Tensor, returns_2: torch.Tensor) -> torch.Tensor:
    """Eq. (1): P_hat[sigma^1 > sigma^2] from the segments' summed predicted rewards (a softmax over
    the two, i.e. the sigmoid of their difference)."""
    return torch.sigmoid(returns_1 - returns_2)


def preference_loss(returns_1: torch.Tensor, returns_2: torch.Tensor, mu_1: torch.Tensor,
                    random_response: float = 0.1) -> torch.Tensor:
    """The cross-entropy loss of Section 2.2.3, averaged over the pairs: mu_1 = mu(1) is the
    label's weight on sigma^1 (1, 0, or 0.5 for equally preferable), and the human answers uniformly
    at random with probability `random_response`: P = (1 - eps) P_hat + eps / 2."""
    eps = random_response
    logit = returns_1 - returns_2
    if eps == 0.0:
        return F.binary_cross_entropy_with_logits(logit, mu_1)
    # log((1 - eps) sigmoid(x) + eps/2), computed from log-sigmoids for stability
    log_p1 = torch.logaddexp(math.log(1 - eps) + F.logsigmoid(logit), torch.full_like(logit, math.log(eps / 2)))
    log_p2 = torch.logaddexp(math.log(1 - eps) + F.logsigmoid(-logit), torch.full_like(logit, math.log(eps / 2)))
    return -(mu_1 * log_p1 + (1 - mu_1) * log_p2).mean()


class RewardNet(nn.Module):
    """One member: r_hat(o, a) from the action and the observation it led to, inputs standardised by
    statistics of the labelled segments (velocities would swamp the rest), the output normalised
    to zero mean and unit standard deviation (2.2.1) by `out_shift`, `out_scale`."""

    def __init__(self, n_in: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.01), nn.Linear(hidden, 1))
        self.register_buffer("in_mean", torch.zeros(n_in))
        self.register_buffer("in_std", torch.ones(n_in))
        self.register_buffer("out_shift", torch.zeros(()))
        self.register_buffer("out_scale", torch.ones(()))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.in_mean) / self.in_std).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.out_shift) / self.out_scale

    def l2(self) -> torch.Tensor:
        return sum(m.weight.pow(2).sum() for m in self.net if isinstance(m, nn.Linear))


class RewardEnsemble(nn.Module):
    """r_hat: the mean of the independently normalised members (2.2.1)."""

    def __init__(self, n_in: int, members: int, hidden: int):
        super().__init__()
        self.members = nn.ModuleList(RewardNet(n_in, hidden) for _ in range(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)

    def segment_returns(self, segments: torch.Tensor) -> torch.Tensor:
        """(members, pairs) summed normalised rewards of segments (pairs, k, n_in)."""
        return torch.stack([m(segments).sum(-1) for m in self.members])


def normalisation(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The shift and scale that give `rewards` zero mean and standard deviation 1 (2.2.1)."""
    return rewards.mean(), rewards.std().clamp_min(1e-8)


# -- the synthetic oracle and the choice of queries -------------------------------------------------
def oracle_labels(true_1: np.ndarray, true_2: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """mu(1) for each pair: 1 where sigma^1 has the higher true return, 0 where sigma^2 has, 0.5 for
    a tie (3.1); with probability `noise` the oracle instead answers 0 or 1 uniformly at random."""
    mu = np.where(true_1 > true_2, 1.0, np.where(true_1 < true_2, 0.0, 0.5))
    random = rng.random(len(mu)) < noise
    mu[random] = rng.integers(0, 2, int(random.sum())).astype(float)
    return mu


def disagreement(probabilities: torch.Tensor) -> torch.Tensor:
    """Ensemble disagreement on each pair (2.2.4): the variance over the members (dim 0) of their
    predicted P_hat[sigma^1 > sigma^2]."""
    return probabilities.var(0, unbiased=False)


def select_queries(probabilities: torch.Tensor, n: int) -> torch.Tensor:
    """The indices of the `n` candidate pairs the members disagree on most (highest variance first)."""
    return torch.argsort(disagreement(probabilities), descending=True, stable=True)[:n]


def label_schedule(cfg: Config) -> list[tuple[int, int]]:
    """(environment step, labels asked then) for the label budget: `pretrain_fraction` of it at step
    0 (before RL), the rest at the refits, cumulatively proportional to the integral of c / (T + c)
    (Appendix A), so the labels thin out as training goes on."""
    pre = round(cfg.pretrain_fraction * cfg.labels)
    refits = list(range(cfg.refit_every, cfg.total_steps, cfg.refit_every))
    if not refits:
        return [(0, cfg.labels)]
    c = cfg.label_rate_c
    area = [c * math.log1p(t / c) for t in refits]
    cumulative = [pre + round((cfg.labels - pre) * a / area[-1]) for a in area]
    out, prev = [(0, pre)], pre
    for t, cum in zip(refits, cumulative):
        out.append((t, cum - prev))
        prev = cum
    return out


# -- the labelled data and the ensemble's fitting ----------------------------------------------------
class Preferences:
    """The labelled pairs D: segment inputs (n, 2, k, n_in), mu(1), and for each member a fixed
    held-out mask (a share 1/e of the labels, 2.2.3) and its l2 coefficient."""

    def __init__(self, members: int, l2: float):
        self.pairs: list[np.ndarray] = []
        self.mu: list[float] = []
        self.held_out: list[np.ndarray] = []   # per label: (members,) bool
        self.l2 = [l2] * members

    def add(self, pairs: np.ndarray, mu: np.ndarray, rng: np.random.Generator) -> None:
        members = len(self.l2)
        for p, m in zip(pairs, mu):
            self.pairs.append(p)
            self.mu.append(float(m))
            self.held_out.append(rng.random(members) < 1 / math.e)

    def __len__(self) -> int:
        return len(self.mu)


def fit(ensemble: RewardEnsemble, data: Preferences, opts: list[torch.optim.Optimizer], cfg: Config,
        rng: np.random.Generator, device, steps: int) -> dict[str, float]:
    """Refit every member on a bootstrap resample of its training labels (`steps` Adam steps on
    the loss of 2.2.3 plus its l2 term), then move its l2 coefficient to keep the validation loss
    within 1.1-1.5 times the training loss. Also resets the input standardisation to the labelled
    segments' statistics."""
    pairs = torch.as_tensor(np.stack(data.pairs), dtype=torch.float32, device=device)  # (n, 2, k, d)
    mu = torch.as_tensor(np.array(data.mu), dtype=torch.float32, device=device)
    held = np.stack(data.held_out)
    flat = pairs.reshape(-1, pairs.shape[-1])
    stats: dict[str, list[float]] = {"rm_train_loss": [], "rm_val_loss": [], "rm_val_accuracy": [], "rm_l2": []}
    for i, (member, opt) in enumerate(zip(ensemble.members, opts)):
        member.in_mean.copy_(flat.mean(0))
        member.in_std.copy_(flat.std(0).clamp_min(1e-6))
        train_idx, val_idx = np.flatnonzero(~held[:, i]), np.flatnonzero(held[:, i])
        if len(train_idx) == 0:
            train_idx = np.arange(len(data))
        boot = torch.as_tensor(rng.choice(train_idx, size=len(train_idx), replace=True), device=device)
        for _ in range(steps):
            mb = boot[torch.as_tensor(rng.integers(0, len(boot), min(cfg.rm_batch, len(boot))), device=device)]
            r = member.raw(pairs[mb]).sum(-1)  # (b, 2)
            loss = preference_loss(r[:, 0], r[:, 1], mu[mb], cfg.random_response) + data.l2[i] * member.l2()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            def ce(idx):
                r = member.raw(pairs[idx]).sum(-1)
                return preference_loss(r[:, 0], r[:, 1], mu[idx], cfg.random_response).item(), r
            train_loss, _ = ce(torch.as_tensor(train_idx, device=device))
            if len(val_idx):
                val_loss, r = ce(torch.as_tensor(val_idx, device=device))
                agree = ((r[:, 0] > r[:, 1]).float() == mu[val_idx]).float().mean().item()
                if val_loss > 1.5 * train_loss:
                    data.l2[i] *= cfg.l2_factor
                elif val_loss < 1.1 * train_loss:
                    data.l2[i] /= cfg.l2_factor
            else:
                val_loss, agree = train_loss, float("nan")
        stats["rm_train_loss"].append(train_loss)
        stats["rm_val_loss"].append(val_loss)
        if not math.isnan(agree):
            stats["rm_val_accuracy"].append(agree)
        stats["rm_l2"].append(data.l2[i])
    return {k: float(np.mean(v)) for k, v in stats.items() if v}


def renormalise(ensemble: RewardEnsemble, inputs: torch.Tensor) -> None:
    """Each member's output shift and scale from its raw rewards on recent transitions (2.2.1)."""
    with torch.no_grad():
        for m in ensemble.members:
            shift, scale = normalisation(m.raw(inputs))
            m.out_shift.copy_(shift)
            m.out_scale.copy_(scale)


# -- the agent --------------------------------------------------------------------------------------
class RLHFAgent(SafetensorsModule):
    """The trained policy (the project's PPO actor-critic, `reproductions.ppo.ppo.ActorCritic`) with
    the observation normaliser it was trained with and, for learned-reward arms, the reward ensemble
    r_hat. Saved whole to safetensors."""

    def __init__(self, policy: ppo_paper.ActorCritic, obs_dim: int, ensemble: RewardEnsemble | None,
                 clip_obs: float = 10.0):
        super().__init__()
        self.policy = policy
        self.reward_model = ensemble
        self.register_buffer("obs_mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("normalize", torch.zeros((), dtype=torch.bool))
        self.clip_obs = clip_obs

    @property
    def learns_reward(self) -> bool:
        return self.reward_model is not None

    def act(self, obs: np.ndarray, deterministic: bool = True):
        obs = np.asarray(obs, dtype=np.float64)
        if bool(self.normalize):
            obs = normalise_obs(obs, self.obs_mean.cpu().numpy(), self.obs_var.cpu().numpy(), self.clip_obs)
        return self.policy.act(obs.astype(np.float32), deterministic=deterministic)

    @torch.no_grad()
    def predicted_rewards(self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        """r_hat of each transition (the ensemble's mean of normalised members), from the action and
        the observation it led to."""
        if self.reward_model is None:
            raise ValueError("this agent was trained on the true reward: it has no reward model")
        x = torch.as_tensor(features(np.asarray(actions), np.asarray(next_obs)), device=self.obs_mean.device)
        return self.reward_model(x).cpu().numpy()


def features(actions: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """The reward model's input of a transition: (a_t, o_{t+1}), float32."""
    return np.concatenate([np.asarray(actions, dtype=np.float32).reshape(len(next_obs), -1),
                           np.asarray(next_obs, dtype=np.float32).reshape(len(next_obs), -1)], axis=1)


def normalise_obs(obs: np.ndarray, mean: np.ndarray, var: np.ndarray, clip: float) -> np.ndarray:
    """Running observation normalisation, as SB3's VecNormalize (epsilon 1e-8, clipped)."""
    return np.clip((obs - mean) / np.sqrt(var + 1e-8), -clip, clip)


def ppo_config(cfg: Config, env_id: str | None = None) -> ppo_paper.Config:
    """The PPO paper's Config for the policy learner, in `env_id` (default: the task's own env)."""
    return ppo_paper.Config(env_id=env_id or cfg.env_id, total_steps=cfg.total_steps, num_envs=cfg.num_envs,
                            num_steps=cfg.num_steps, epochs=cfg.epochs, minibatch_size=cfg.minibatch_size, lr=cfg.lr,
                            gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, clip_ratio=cfg.clip_ratio,
                            vf_coef=cfg.vf_coef, ent_coef=cfg.ent_coef, max_grad_norm=cfg.max_grad_norm,
                            hidden=cfg.hidden)


def _check(cfg: Config) -> None:
    if cfg.reward not in ("learned", "true"):
        raise ValueError(f"config field 'reward': {cfg.reward!r} is not 'learned' or 'true'")
    if cfg.queries not in ("disagreement", "random"):
        raise ValueError(f"config field 'queries': {cfg.queries!r} is not 'disagreement' or 'random'")


def _dims(env_id: str) -> tuple[int, int]:
    """(observation size, reward-model input size) of the task."""
    env = make_env(env_id)
    try:
        obs_dim = int(np.prod(env.observation_space.shape))
        return obs_dim, int(np.prod(env.action_space.shape)) + obs_dim
    finally:
        env.close()


def build(cfg: Config) -> RLHFAgent:
    _check(cfg)
    obs_dim, n_in = _dims(cfg.env_id)
    ensemble = RewardEnsemble(n_in, cfg.ensemble, cfg.rm_hidden) if cfg.reward == "learned" else None
    return RLHFAgent(ppo_paper.build(ppo_config(cfg)), obs_dim, ensemble)


# -- the loop: segments, labels and refits inside the env PPO trains in -----------------------------
class Segments:
    """Whole episodes of one env cut into non-overlapping segments of k steps (the remainder
    dropped): their reward-model inputs (k, n_in) and true returns."""

    def __init__(self, k: int):
        self.k = k
        self.inputs: list[np.ndarray] = []
        self.true_returns: list[float] = []

    def add_episode(self, inputs: np.ndarray, rewards: np.ndarray) -> None:
        for s in range(0, len(rewards) - self.k + 1, self.k):
            self.inputs.append(inputs[s:s + self.k])
            self.true_returns.append(float(rewards[s:s + self.k].sum()))

    def __len__(self) -> int:
        return len(self.true_returns)


class Labeller:
    """Asks the oracle for labels on pairs of segments (random pairs, or those of highest ensemble
    disagreement among `candidates` times as many random ones), and refits the ensemble."""

    def __init__(self, ensemble: RewardEnsemble, cfg: Config, run, rng: np.random.Generator):
        self.ensemble, self.cfg, self.run, self.rng = ensemble, cfg, run, rng
        self.data = Preferences(cfg.ensemble, cfg.l2_init)
        self.opts = [torch.optim.Adam(m.parameters(), lr=cfg.rm_lr) for m in ensemble.members]
        self.device = run.device

    def ask(self, pool: Segments, n: int, disagreement_queries: bool) -> None:
        if n <= 0 or len(pool) < 2:
            return
        m = n * self.cfg.candidates if disagreement_queries else n
        i = self.rng.integers(0, len(pool), m)
        j = (i + self.rng.integers(1, len(pool), m)) % len(pool)  # a different segment
        if disagreement_queries:
            seg = torch.as_tensor(np.stack([np.stack([pool.inputs[a], pool.inputs[b]]) for a, b in zip(i, j)]),
                                  device=self.device)
            with torch.no_grad():
                r = self.ensemble.segment_returns(seg.flatten(0, 1)).unflatten(1, (m, 2))  # (members, m, 2)
                chosen = select_queries(preference_probability(r[..., 0], r[..., 1]), n).cpu().numpy()
            i, j = i[chosen], j[chosen]
        true = np.array(pool.true_returns)
        mu = oracle_labels(true[i], true[j], self.cfg.label_noise, self.rng)
        pairs = np.stack([np.stack([pool.inputs[a], pool.inputs[b]]) for a, b in zip(i, j)])
        self.data.add(pairs, mu, self.rng)

    def refit(self, step: int, recent: Segments, steps: int) -> None:
        stats = fit(self.ensemble, self.data, self.opts, self.cfg, self.rng, self.device, steps)
        inputs = torch.as_tensor(np.concatenate(recent.inputs), device=self.device)
        renormalise(self.ensemble, inputs)
        self.run.log(step, labels=float(len(self.data)), **stats)


class Feedback:
    """What every env of one run shares (the vector env's actors, and the probe env `ppo.build`
    makes for the spaces): the labeller (None on the true reward), the environment-step count, the
    segments collected since the last refit, the label schedule, and the running statistics of the
    observation and return normalisation."""

    def __init__(self, cfg: Config, obs_dim: int, labeller: Labeller | None, run):
        self.cfg, self.labeller, self.run = cfg, labeller, run
        self.schedule = dict(label_schedule(cfg)[1:]) if labeller is not None else {}
        self.steps = 0
        self.recent = Segments(cfg.segment_length)
        self.refits: list[int] = []   # the steps at which the ensemble was refit during RL
        self.obs_rms = RunningMeanStd(shape=(obs_dim,))
        self.ret_rms = RunningMeanStd(shape=())

    def __deepcopy__(self, memo):
        # gym.make deep-copies a registration's kwargs for each env: every env of the run must share this one
        return self

    def reward(self, x: np.ndarray) -> float:
        """r_hat of one transition's features (the ensemble's mean of its normalised members)."""
        with torch.no_grad():
            return float(self.labeller.ensemble(torch.as_tensor(x[None], device=self.labeller.device))[0])

    def advance(self) -> None:
        """One environment step taken; at a refit step of the schedule, ask for its labels on the
        segments collected since the last refit and refit the ensemble (the paper's asynchronous
        processes, run in turn)."""
        self.steps += 1
        if self.steps in self.schedule and len(self.recent) >= 2:
            self.labeller.ask(self.recent, self.schedule[self.steps], self.cfg.queries == "disagreement")
            self.labeller.refit(self.steps, self.recent, self.cfg.rm_steps)
            self.refits.append(self.steps)
            self.recent = Segments(self.cfg.segment_length)

    def observation(self, obs: np.ndarray) -> np.ndarray:
        if not self.cfg.normalize:
            return obs
        self.obs_rms.update(np.asarray(obs, dtype=np.float64)[None])
        return normalise_obs(obs, self.obs_rms.mean, self.obs_rms.var, 10.0).astype(np.float32)


class PreferenceEnv(gym.Wrapper):
    """One actor's env. On learned-reward arms the env's reward is replaced by r_hat(a_t, o_{t+1})
    (the true reward stays in info["true_reward"], for the oracle and the logs only) and whole
    episodes are cut into segments for the labeller; then, with `normalize`, the observation and the
    return are normalised by running statistics as SB3's VecNormalize does (the discounted return's
    standard deviation scales the reward, clipped to +-10)."""

    def __init__(self, env: gym.Env, feedback: Feedback):
        super().__init__(env)
        self.feedback = feedback
        self.inputs: list[np.ndarray] = []
        self.true_rewards: list[float] = []
        self.discounted = 0.0

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.inputs, self.true_rewards, self.discounted = [], [], 0.0
        return self.feedback.observation(obs), info

    def step(self, action):
        fb = self.feedback
        obs, true_reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "true_reward": float(true_reward)}
        reward = float(true_reward)
        self.true_rewards.append(float(true_reward))
        if fb.labeller is not None:
            x = features(np.asarray(action)[None], np.asarray(obs)[None])[0]
            reward = fb.reward(x)
            self.inputs.append(x)
        if terminated or truncated:
            fb.run.log(fb.steps + 1, true_return=float(sum(self.true_rewards)))
            if fb.labeller is not None:
                fb.recent.add_episode(np.stack(self.inputs), np.array(self.true_rewards))
            self.inputs, self.true_rewards = [], []
        if fb.cfg.normalize:
            self.discounted = self.discounted * fb.cfg.gamma + reward
            fb.ret_rms.update(np.array([self.discounted]))
            reward = float(np.clip(reward / np.sqrt(fb.ret_rms.var + 1e-8), -10.0, 10.0))
            if terminated or truncated:
                self.discounted = 0.0
        fb.advance()
        return fb.observation(obs), reward, terminated, truncated, info


def make_preference_env(env_id: str, feedback: Feedback) -> gym.Env:
    """The registered env's entry point: the task's own env (`evals.tasks.envs.make_env`) wrapped."""
    return PreferenceEnv(make_env(env_id), feedback)


def register_env(cfg: Config, feedback: Feedback) -> str:
    """A Gymnasium id, for this run only, whose envs are `PreferenceEnv`s of the task sharing
    `feedback`: `ppo.train` makes its envs by id, so it trains on the learned reward unchanged."""
    env_id = f"rlhf/{cfg.env_id.split('-v')[0]}-{uuid.uuid4().hex[:12]}-v0"
    gym.register(env_id, entry_point=make_preference_env, kwargs={"env_id": cfg.env_id, "feedback": feedback},
                 disable_env_checker=True, order_enforce=False)
    return env_id


def random_policy_segments(cfg: Config, n_segments: int, seed: int, rng: np.random.Generator) -> Segments:
    """Segments of a uniformly random policy for the labels asked before RL (Appendix A), from
    episodes with their own reset seeds (not the training env's)."""
    env = make_env(cfg.env_id)
    pool, episode = Segments(cfg.segment_length), 0
    low, high = env.action_space.low, env.action_space.high
    try:
        while len(pool) < n_segments:
            obs, _ = env.reset(seed=episode_seed(seed + 7919, episode))
            inputs, rews, done = [], [], False
            while not done:
                a = rng.uniform(low, high).astype(np.float32)
                obs, r, terminated, truncated, _ = env.step(a)
                inputs.append(features(a[None], obs[None])[0])
                rews.append(r)
                done = terminated or truncated
            pool.add_episode(np.stack(inputs), np.array(rews))
            episode += 1
            if episode >= 100 and len(pool) == 0:
                raise ValueError(f"{cfg.env_id}: 100 random-policy episodes all shorter than segment_length "
                                 f"{cfg.segment_length}: no segment to label")
    finally:
        env.close()
    return pool


def train(cfg: Config, run) -> RLHFAgent:
    """The project's PPO (`ppo.train`, unchanged) in an env registered for the run, which puts the
    learned reward and the labelling in the env. No mid-run checkpoints (as `ppo.train`)."""
    _check(cfg)
    obs_dim, n_in = _dims(cfg.env_id)
    ensemble, labeller = None, None
    if cfg.reward == "learned":
        # ALGO LOGIC: labels before RL, on random-policy segments, then the first fit. The global torch
        # stream is left as ppo.train would find it, so every arm starts from the same policy on a seed.
        with torch.random.fork_rng(devices=[]):
            ensemble = RewardEnsemble(n_in, cfg.ensemble, cfg.rm_hidden).to(run.device)
            rng = np.random.default_rng(run.seed)
            labeller = Labeller(ensemble, cfg, run, rng)
            pre = label_schedule(cfg)[0][1]
            pool = random_policy_segments(cfg, max(2, 4 * pre), run.seed, rng)
            labeller.ask(pool, pre, disagreement_queries=False)  # an untrained ensemble cannot disagree usefully
            labeller.refit(0, pool, cfg.rm_pretrain_steps)
    feedback = Feedback(cfg, obs_dim, labeller, run)
    env_id = register_env(cfg, feedback)
    try:
        # TRY NOT TO MODIFY: the project's PPO loop, as the PPO paper runs it
        policy = ppo_paper.train(ppo_config(cfg, env_id), run)
    finally:
        del gym.registry[env_id]
    agent = RLHFAgent(policy, obs_dim, ensemble).to(run.device)
    if cfg.normalize:
        agent.obs_mean.copy_(torch.as_tensor(feedback.obs_rms.mean))
        agent.obs_var.copy_(torch.as_tensor(feedback.obs_rms.var))
        agent.normalize.fill_(True)
    agent.feedback = feedback  # not a module: the run's labels, refits and statistics (for tests)
    return agent


def dry_run_step(agent: RLHFAgent, cfg: Config) -> dict[str, float]:
    """One minibatch step of PPO's eq. (9) and, on learned-reward arms, one Adam step of the
    reward-model loss on random segment pairs."""
    out = ppo_paper.dry_run_step(agent.policy, ppo_config(cfg))
    if agent.reward_model is None:
        return out
    member = agent.reward_model.members[0]
    n_in = member.in_mean.shape[0]
    g = torch.Generator().manual_seed(0)
    seg = torch.randn(8, 2, cfg.segment_length, n_in, generator=g)
    mu = torch.randint(0, 2, (8,), generator=g).float()
    opt = torch.optim.Adam(member.parameters(), lr=cfg.rm_lr)
    r = member.raw(seg).sum(-1)
    loss = preference_loss(r[:, 0], r[:, 1], mu, cfg.random_response)
    loss.backward()
    opt.step()
    return {**out, "rm_loss": loss.item()}
