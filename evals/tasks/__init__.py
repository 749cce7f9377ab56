"""The tasks: what both a paper's training code and the harness's evaluators need to agree on.

Environments and the Atari pipeline (`envs`, `atari`), evaluation rollouts (`rollout`), the
offline image data and the image datasets by name (`images`, `image_loaders`), and the code
corpus with its tokenizers (`code_corpus`). A leaf package, like lm-eval's tasks inside lm-eval:
it imports nothing from the rest of `evals` and nothing from `reproductions`, so papers may import
it (and `evals.contract`) without reaching into the harness, and evaluators may import it without
reaching into a paper.
"""
