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

The policy is Stable-Baselines3's PPO as the project's PPO paper configures it
(`reproductions.ppo.sb3_baseline.build`), run by the project's SB3 kit (`reproductions.common.sb3`);
the learned reward replaces the environment's reward inside a VecEnv wrapper, which also collects
the segments, asks the oracle and refits the ensemble every `refit_every` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize

from evals.contract import SafetensorsModule
from evals.tasks.atari import env_data_fingerprint as data_fingerprint  # noqa: F401  (the contract's data hooks)
from evals.tasks.atari import env_required_data as required_data  # noqa: F401
from evals.tasks.envs import episode_seed, make_env
from reproductions.common.sb3 import Logging, learn
from reproductions.ppo import ppo as ppo_paper
from reproductions.ppo import sb3_baseline


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
    # PPO (reproductions/ppo, Table 3 of the PPO paper)
    num_steps: int = 2048
    epochs: int = 10
    minibatch_size: int = 64
    lr: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_ratio: float = 0.2
    ent_coef: float = 0.0
    hidden: int = 64
    normalize: bool = True            # VecNormalize: running observation and return normalisation (both arms)


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
    """The trained policy (SB3's actor-critic with the observation normaliser it was trained with)
    and, for learned-reward arms, the reward ensemble r_hat. Saved whole to safetensors."""

    def __init__(self, policy: nn.Module, obs_dim: int, ensemble: RewardEnsemble | None, clip_obs: float = 10.0):
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
        if bool(self.normalize):  # as VecNormalize.normalize_obs (epsilon 1e-8)
            mean, var = self.obs_mean.cpu().numpy(), self.obs_var.cpu().numpy()
            obs = np.clip((obs - mean) / np.sqrt(var + 1e-8), -self.clip_obs, self.clip_obs)
        action, _ = self.policy.predict(obs.astype(np.float32), deterministic=deterministic)
        return action

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


def ppo_config(cfg: Config) -> ppo_paper.Config:
    """The PPO paper's Config for the policy learner (one actor)."""
    return ppo_paper.Config(env_id=cfg.env_id, total_steps=cfg.total_steps, num_envs=1, num_steps=cfg.num_steps,
                            epochs=cfg.epochs, minibatch_size=cfg.minibatch_size, lr=cfg.lr, gamma=cfg.gamma,
                            gae_lambda=cfg.gae_lambda, clip_ratio=cfg.clip_ratio, ent_coef=cfg.ent_coef,
                            hidden=cfg.hidden, max_grad_norm=0.5)


def _check(cfg: Config) -> None:
    if cfg.reward not in ("learned", "true"):
        raise ValueError(f"config field 'reward': {cfg.reward!r} is not 'learned' or 'true'")
    if cfg.queries not in ("disagreement", "random"):
        raise ValueError(f"config field 'queries': {cfg.queries!r} is not 'disagreement' or 'random'")


def build(cfg: Config, seed: int = 0, device: str = "cpu") -> RLHFAgent:
    _check(cfg)
    sb3 = sb3_baseline.build(ppo_config(cfg), seed=seed, device=device)
    env = sb3.model.get_env()
    obs_dim = int(np.prod(env.observation_space.shape))
    n_in = int(np.prod(env.action_space.shape)) + obs_dim
    ensemble = RewardEnsemble(n_in, cfg.ensemble, cfg.rm_hidden) if cfg.reward == "learned" else None
    agent = RLHFAgent(sb3.model.policy, obs_dim, ensemble)
    agent.sb3 = sb3  # not a module: the SB3 model that trains the policy (train only)
    return agent


# -- the loop: segments, labels and refits inside the env -------------------------------------------
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


class LearnedReward(VecEnvWrapper):
    """Replaces the env's reward by r_hat(a_t, o_{t+1}) and, every `refit_every` steps, asks for the
    labels the schedule gives to that step on segments collected since the last refit and refits
    the ensemble (the paper's asynchronous processes, run in turn)."""

    def __init__(self, venv, labeller: Labeller, cfg: Config):
        super().__init__(venv)
        self.labeller, self.cfg = labeller, cfg
        self.schedule = dict(label_schedule(cfg))
        self.steps = 0
        self.recent = Segments(cfg.segment_length)
        self.episodes = [([], []) for _ in range(venv.num_envs)]
        self.actions = None

    def reset(self):
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self.actions = actions
        self.venv.step_async(actions)

    def step_wait(self):
        obs, true_rewards, dones, infos = self.venv.step_wait()
        next_obs = np.stack([info["terminal_observation"] if done else o for o, done, info in zip(obs, dones, infos)])
        x = features(self.actions, next_obs)
        with torch.no_grad():
            rewards = self.labeller.ensemble(torch.as_tensor(x, device=self.labeller.device)).cpu().numpy()
        for e, (inputs, rews) in enumerate(self.episodes):
            inputs.append(x[e])
            rews.append(true_rewards[e])
            if dones[e]:
                self.recent.add_episode(np.stack(inputs), np.array(rews))
                self.episodes[e] = ([], [])
        self.steps += self.num_envs
        if self.steps in self.schedule and len(self.recent) >= 2:
            self.labeller.ask(self.recent, self.schedule[self.steps], self.cfg.queries == "disagreement")
            self.labeller.refit(self.steps, self.recent, self.cfg.rm_steps)
            self.recent = Segments(self.cfg.segment_length)
        return obs, rewards.astype(np.float32), dones, infos


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
    """No mid-run checkpoints (SB3 keeps its own state, as the SB3 kit says)."""
    agent = build(cfg, seed=run.seed, device=str(run.device))
    agent.reward_model is not None and agent.reward_model.to(run.device)
    sb3 = agent.sb3
    venv = sb3.model.get_env()
    rng = np.random.default_rng(run.seed)
    if cfg.reward == "learned":
        # ALGO LOGIC: labels before RL, on random-policy segments, then the first fit
        labeller = Labeller(agent.reward_model, cfg, run, rng)
        pre = label_schedule(cfg)[0][1]
        pool = random_policy_segments(cfg, max(2, 4 * pre), run.seed, rng)
        labeller.ask(pool, pre, disagreement_queries=False)  # an untrained ensemble cannot disagree usefully
        labeller.refit(0, pool, cfg.rm_pretrain_steps)
        venv = LearnedReward(venv, labeller, cfg)
    if cfg.normalize:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=cfg.gamma, clip_obs=agent.clip_obs)
    sb3.model.set_env(venv)
    # TRY NOT TO MODIFY: SB3's loop through the project's kit
    batch = cfg.num_steps
    learn(sb3, run, cfg.total_steps // batch * batch, Logging(sb3_baseline.LOGGED, at_rollout_end=True))
    if cfg.normalize:
        agent.obs_mean.copy_(torch.as_tensor(venv.obs_rms.mean))
        agent.obs_var.copy_(torch.as_tensor(venv.obs_rms.var))
        agent.normalize.fill_(True)
    return agent


def dry_run_step(agent: RLHFAgent, cfg: Config) -> dict[str, float]:
    """One Adam step of the reward-model loss on random segment pairs (learned-reward arms), or none."""
    if agent.reward_model is None:
        return {}
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
    return {"rm_loss": loss.item()}
