"""The vectorized engine: every sampled client of a round trained at once, as one batched computation.

Why: with small models and small clients, the loop engine spends its time in Python and PyTorch
overhead (one tiny forward, backward and Adam step per client and batch), not in arithmetic.
Training ``C`` clients together turns ``C`` tiny matrix products into one batched product, so the
overhead is paid once per step instead of once per client and step.

How:

- **Stacked weights.** Each client's parameters are one row of a flat ``(C, P)`` buffer (``P`` =
  parameters of the model); every layer's weight and bias are views into it, shaped
  ``(C, out, in)`` and ``(C, out)``. A layer is one ``torch.baddbmm`` over the client dimension
  (``torch.bmm`` for Deep SVDD's bias-free layers). Buffers (Deep SVDD's centre) are not trained:
  every client's update carries the global model's copy.
- **Hand-written layer gradients.** The backward passes of these batched layers (``Linear``,
  ``ReLU``) are written out: for layers this small, autograd's bookkeeping costs more than the
  arithmetic. The objectives and their gradients come from :mod:`fedad_tutorial.models`
  (``squared_error_backward``, ``elbo_rows_backward``, ``squared_distance_backward``, ...), where
  each formula is stated once.
  The tests check the engine against the loop engine's autograd, in float32 and float64.
- **Per-client Adam.** ``torch.optim.Adam``'s update (defaults: betas 0.9/0.999, eps 1e-8, no
  weight decay) on flat ``(C, P)`` moment buffers, with a step count per client, so bias
  corrections are per client too.
- **Exactly the loop engine's steps.** Each client's batch order and VAE noise come from
  :func:`~fedad_tutorial.training.round_plan` with its
  :func:`~fedad_tutorial.training.client_generator`, as in ``train_local``.
- **Ragged clients by masking.** Clients have different row counts, hence different numbers of
  batches per epoch. Clients are sorted by size (largest first), so at every step the clients that
  still have a batch form a prefix ``[:k]`` of the stack: only that prefix computes and steps, and
  the others' parameters, Adam moments and step counts are left untouched. A short last batch is
  padded to the width of the others, and its loss is averaged over its valid rows only.
- **Trimmed training.** With ``trim > 0`` (:func:`~fedad_tutorial.training.batch_loss`), the
  per-row losses are computed first; then, per client, the
  :func:`~fedad_tutorial.training.kept_rows` lowest-loss of its valid rows (padding never counts)
  get weight 1 / kept and the others 0, before the backward pass. Rows are picked by
  ``torch.topk`` (smallest, unsorted) as in the loop engine, on a client's valid rows only: one
  call per group of clients with the same number of valid rows, which keeps per client what the
  loop's one-client call keeps, so ties are broken the same way (a test checks this on heavily
  tied losses). The loss reported is the same trimmed mean.
- **Steps planned once per round.** The steps of an epoch (clients with a batch, batch width,
  row weights) are the same every epoch, so their tensor views are made once per round, and each
  epoch's rows are put in plan order by one gather.
- **Chunks.** Clients are processed in chunks of at most :data:`CHUNK_CLIENTS`, which bounds memory
  for federations of thousands of clients.

Results equal the loop engine's up to float rounding (sums are taken in a different order). With
trimming, that rounding could in principle reorder two rows whose losses differ by about 1e-7
relative at the cut and so keep the other one; exactly equal losses are resolved identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from fedad_tutorial.models import (
    bound_logvar,
    bound_logvar_backward,
    elbo_rows,
    elbo_rows_backward,
    reparameterize,
    reparameterize_backward,
    squared_distance,
    squared_distance_backward,
    squared_error,
    squared_error_backward,
)
from fedad_tutorial.training import RoundPlan, client_generator, kept_rows, needs_noise, round_plan

if TYPE_CHECKING:
    from fedad_tutorial.config import FederatedConfig

#: Largest number of clients trained in one batched computation.
CHUNK_CLIENTS = 256
#: ``torch.optim.Adam`` defaults.
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

# A stack (an nn.Sequential of Linear and ReLU layers) as a list of operations: a Linear as the
# indices of its weight and bias in the parameter list (NO_BIAS if it has none), or RELU.
NO_BIAS = -1
Linear = tuple[int, int]
RELU: Linear = (-1, NO_BIAS)
Stack = list[Linear]
Tape = list[tuple[Linear, torch.Tensor]]  # per operation: (Linear, its input) or (RELU, its output)


def _layer(index: dict[str, int], name: str) -> Linear:
    """The :data:`Linear` operation of the layer ``name`` (e.g. ``encoder.0``)."""
    return index[f"{name}.weight"], index.get(f"{name}.bias", NO_BIAS)


def _stack(seq: nn.Sequential, index: dict[str, int], prefix: str) -> Stack:
    ops = []
    for name, layer in seq.named_children():
        if isinstance(layer, nn.Linear):
            ops.append(_layer(index, f"{prefix}.{name}"))
        elif isinstance(layer, nn.ReLU):
            ops.append(RELU)
        else:
            raise TypeError(f"the vectorized engine cannot batch a {type(layer).__name__} layer")
    return ops


def _linear(params: list[torch.Tensor], op: Linear, h: torch.Tensor) -> torch.Tensor:
    """``nn.Linear`` for every client at once: ``h`` is ``(C, rows, in)``."""
    w, b = op
    if b == NO_BIAS:
        return torch.bmm(h, params[w].transpose(1, 2))
    return torch.baddbmm(params[b].unsqueeze(1), h, params[w].transpose(1, 2))


def _forward(ops: Stack, params: list[torch.Tensor], h: torch.Tensor, tape: Tape) -> torch.Tensor:
    """Apply a stack to ``h`` (``(C, rows, in)``), recording what backward needs."""
    owned = False  # ReLU works in place on the stack's own results, never on its input
    for op in ops:
        if op == RELU:
            h = h.relu_() if owned else torch.relu(h)
            tape.append((RELU, h))
        else:
            tape.append((op, h))
            h = _linear(params, op, h)
        owned = True
    return h


def _linear_backward(params: list[torch.Tensor], grads: list[torch.Tensor], op: Linear, h: torch.Tensor,
                     g: torch.Tensor, input_grad: bool = True) -> torch.Tensor | None:
    """Write the weight and bias gradients of :func:`_linear` given ``g`` = d loss / d output into
    ``grads``; return d/d ``h`` (if ``input_grad``)."""
    w, b = op
    torch.bmm(g.transpose(1, 2), h, out=grads[w])
    if b != NO_BIAS:
        torch.sum(g, dim=1, out=grads[b])
    return torch.bmm(g, params[w]) if input_grad else None


def _backward(tape: Tape, params: list[torch.Tensor], grads: list[torch.Tensor], g: torch.Tensor,
              input_grad: bool = True) -> torch.Tensor | None:
    """Backpropagate ``g`` (d loss / d output of a stack) through :func:`_forward`'s tape; without
    ``input_grad``, stop once the first Linear's parameter gradients are written."""
    first_linear = next((i for i, (op, _) in enumerate(tape) if op != RELU), len(tape))
    for i in range(len(tape) - 1, -1, -1):
        op, saved = tape[i]
        if not input_grad and i <= first_linear:
            if i == first_linear:
                _linear_backward(params, grads, op, saved, g, input_grad=False)
            return None
        if op == RELU:
            g = torch.ops.aten.threshold_backward(g, saved, 0.0)  # ReLU's backward, as autograd does it
        else:
            g = _linear_backward(params, grads, op, saved, g)
    return g


@dataclass
class _Model:
    """What the engine needs of a model: its kind, KL weight and stacks, the VAE's heads and
    Deep SVDD's centre."""

    kind: str
    beta: float
    encoder: Stack
    decoder: Stack  # empty for Deep SVDD
    to_mu: Linear | None = None
    to_logvar: Linear | None = None
    center: torch.Tensor | None = None

    @classmethod
    def of(cls, model: nn.Module, names: list[str]) -> _Model:
        index = {name: i for i, name in enumerate(names)}
        kind = model.spec.kind
        heads = (_layer(index, "to_mu"), _layer(index, "to_logvar")) if kind == "vae" else (None, None)
        decoder = _stack(model.decoder, index, "decoder") if kind != "svdd" else []
        return cls(kind, model.spec.beta, _stack(model.encoder, index, "encoder"), decoder, *heads,
                   center=model.center.detach() if kind == "svdd" else None)


def _loss_and_grads(model: _Model, params: list[torch.Tensor], grads: list[torch.Tensor], x: torch.Tensor,
                    noise: torch.Tensor | None, row_weights: torch.Tensor, trim: float,
                    groups: tuple[tuple[int, int, int], ...], out: torch.Tensor) -> None:
    """Write each client's batch loss into ``out`` ``(C,)`` and the gradients of its parameters into ``grads``.

    ``row_weights`` ``(C, rows)`` is 1 / (valid rows) on a client's valid rows and 0 on padding,
    so each loss is ``model.loss`` of the valid rows. With ``trim > 0`` it is replaced, once the
    per-row losses are known, by :func:`_trimmed_weights` (``groups`` as described there), so each
    loss is :func:`~fedad_tutorial.training.batch_loss` of the valid rows.
    """
    encoder_tape: Tape = []
    decoder_tape: Tape = []
    h = _forward(model.encoder, params, x, encoder_tape)
    if model.kind == "svdd":
        per_row = squared_distance(h, model.center)
        if trim > 0.0:
            row_weights = _trimmed_weights(per_row, groups, trim)
        g_h = squared_distance_backward(h, model.center, row_weights)
    elif model.kind == "ae":
        recon = _forward(model.decoder, params, h, decoder_tape)
        per_row = squared_error(recon, x).mean(dim=-1)
        if trim > 0.0:
            row_weights = _trimmed_weights(per_row, groups, trim)
        g_h = _backward(decoder_tape, params, grads, squared_error_backward(recon, x, row_weights))
    else:
        mu, raw_logvar = _linear(params, model.to_mu, h), _linear(params, model.to_logvar, h)
        logvar = bound_logvar(raw_logvar)
        recon = _forward(model.decoder, params, reparameterize(mu, logvar, noise), decoder_tape)
        per_row = elbo_rows(recon, x, mu, logvar, model.beta)
        if trim > 0.0:
            row_weights = _trimmed_weights(per_row, groups, trim)
        g_recon, g_mu, g_logvar = elbo_rows_backward(recon, x, mu, logvar, model.beta, row_weights)
        g_mu_z, g_logvar_z = reparameterize_backward(logvar, noise, _backward(decoder_tape, params, grads, g_recon))
        g_h = _linear_backward(params, grads, model.to_mu, h, g_mu.add_(g_mu_z))
        g_h += _linear_backward(params, grads, model.to_logvar, h,
                                bound_logvar_backward(raw_logvar, g_logvar.add_(g_logvar_z)))
    _backward(encoder_tape, params, grads, g_h, input_grad=False)
    torch.sum(per_row * row_weights, dim=1, out=out)


def _trimmed_weights(per_row: torch.Tensor, groups: tuple[tuple[int, int, int], ...], trim: float) -> torch.Tensor:
    """Row weights of a trimmed step: 1 / kept on each client's kept rows, 0 elsewhere (padding too).

    ``groups`` lists ``(first, last, n)``: clients ``[first:last]`` have ``n`` valid rows (the first
    ``n`` of the batch). Of those, each keeps its ``kept_rows(n, trim)`` lowest-loss rows, chosen by
    the call :func:`~fedad_tutorial.training.batch_loss` makes (``torch.topk``, smallest, unsorted)
    on exactly its ``n`` valid losses: a batched ``topk`` handles each row as the one-row call would,
    so tied losses are resolved as in the loop engine.
    """
    weights = torch.zeros_like(per_row)
    for first, last, n in groups:
        keep = kept_rows(n, trim)
        kept = torch.topk(per_row[first:last, :n], keep, dim=1, largest=False, sorted=False).indices
        weights[first:last].scatter_(1, kept, 1.0 / keep)
    return weights


def _pad(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Stack tensors that differ in size along ``dim``, zero-padded to the largest."""
    size = max(t.shape[dim] for t in tensors)
    out = tensors[0].new_zeros((len(tensors), *tensors[0].shape[:dim], size, *tensors[0].shape[dim + 1:]))
    for c, t in enumerate(tensors):
        out[c].narrow(dim, 0, t.shape[dim]).copy_(t)
    return out


@dataclass
class _Step:
    """One step of every epoch: batch rows ``[start:start + width]`` of the first ``k`` clients."""

    start: int
    width: int
    k: int
    row_weights: torch.Tensor  # (k, width): 1 / valid rows on a client's valid rows, 0 on padding
    groups: tuple[tuple[int, int, int], ...]  # for trimming: clients [first:last] have n valid rows


def _schedule(counts: list[int], batch: int, dtype: torch.dtype) -> list[_Step]:
    """The steps of an epoch for clients with ``counts`` rows, sorted largest first."""
    steps = []
    n_max = counts[0]
    for start in range(0, n_max, batch):
        n_valid = [min(batch, n - start) for n in counts if n > start]  # non-increasing
        k, width = len(n_valid), n_valid[0]
        valid = torch.arange(width).unsqueeze(0) < torch.tensor(n_valid).unsqueeze(1)  # (k, width)
        groups = tuple((n_valid.index(n), len(n_valid) - n_valid[::-1].index(n), n)
                       for n in sorted(set(n_valid), reverse=True))
        steps.append(_Step(start, width, k, valid.to(dtype) / valid.sum(dim=1, keepdim=True), groups))
    return steps


def _train_chunk(model: nn.Module, rows: list[torch.Tensor], plans: list[RoundPlan],
                 config: FederatedConfig) -> tuple[torch.Tensor, list[float]]:
    """Train clients sorted by row count (largest first) from the global weights: their weights
    ``(C, P)`` (rows in ``model.parameters()`` order) and mean training losses."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [s.numel() for s in shapes]
    net = _Model.of(model, names)
    global_flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    num = len(rows)
    flat = global_flat.expand(num, -1).clone()  # (C, P) one row of weights per client
    exp_avg, exp_avg_sq = torch.zeros_like(flat), torch.zeros_like(flat)
    grad, work = torch.empty_like(flat), torch.empty_like(flat)  # reused buffers
    layer_grads = [flat.new_empty(num, *s) for s in shapes]  # written by the backward pass, then joined

    counts = [r.shape[0] for r in rows]
    x_all = _pad(rows, 0)  # (C, n_max, d)
    perms = _pad([p.permutations for p in plans], 1)  # (C, epochs, n_max), padded with row 0
    noise = None if plans[0].noise is None else _pad([p.noise for p in plans], 1)  # (C, epochs, n_max, L)
    epochs, (n_max, dim) = perms.shape[1], x_all.shape[1:]
    row_offsets = torch.arange(num).unsqueeze(1) * n_max  # client c's rows start at c * n_max in x_all
    steps = _schedule(counts, config.batch_size, flat.dtype)
    losses = flat.new_empty(epochs, len(steps), num)  # each step's loss per client (unused entries stay)
    # Adam's bias corrections for every step: at step j of epoch e, client c is at its step e * nb_c + j + 1.
    batches = torch.tensor([-(-n // config.batch_size) for n in counts])  # nb_c: batches per epoch
    adam_steps = (torch.arange(epochs).view(-1, 1, 1) * batches + torch.arange(len(steps)).view(1, -1, 1)
                  + 1).double()  # (epochs, steps per epoch, C); entries of clients without a batch go unused
    neg_step_sizes = (-config.lr / (1.0 - BETA1**adam_steps)).to(flat.dtype).unsqueeze(3)
    bias_corrections2_sqrt = (1.0 - BETA2**adam_steps).sqrt().to(flat.dtype).unsqueeze(3)

    # Per number of stepping clients k: views of their parameters, gradients and Adam state, made once.
    views = {}
    for k in sorted({s.k for s in steps}):
        params = [t.view(k, *s) for t, s in zip(flat[:k].split(sizes, dim=1), shapes, strict=True)]
        grads = [g[:k] for g in layer_grads]
        views[k] = (params, grads, [g.view(k, -1) for g in grads],
                    (flat[:k], grad[:k], exp_avg[:k], exp_avg_sq[:k], work[:k]))

    for epoch in range(epochs):
        order = (perms[:, epoch] + row_offsets).reshape(-1)
        x_epoch = x_all.reshape(-1, dim).index_select(0, order).view(num, n_max, dim)  # rows in plan order
        for j, step in enumerate(steps):
            k = step.k
            params, grads, flat_grads, (p, g, m, v, denom) = views[k]
            xb = x_epoch[:k, step.start:step.start + step.width]
            nb = None if noise is None else noise[:k, epoch, step.start:step.start + step.width]
            _loss_and_grads(net, params, grads, xb, nb, step.row_weights, config.trim, step.groups,
                            out=losses[epoch, j, :k])
            torch.cat(flat_grads, dim=1, out=g)

            # torch.optim.Adam's single-tensor update, with a step count per client.
            m.lerp_(g, 1.0 - BETA1)
            v.mul_(BETA2).addcmul_(g, g, value=1.0 - BETA2)
            torch.sqrt(v, out=denom).div_(bias_corrections2_sqrt[epoch, j, :k]).add_(EPS)
            p.addcmul_(torch.div(m, denom, out=denom), neg_step_sizes[epoch, j, :k])

    loss_sum = torch.zeros(num, dtype=torch.float64)
    for epoch in range(epochs):  # step by step, as the loop engine adds them up
        for j, step in enumerate(steps):
            loss_sum[:step.k] += losses[epoch, j, :step.k].double()
    return flat, (loss_sum / (epochs * batches)).tolist()


def vectorized_engine(global_model: nn.Module, client_rows: list[torch.Tensor], client_ids: list[int],
                      round_idx: int, config: FederatedConfig) -> list[tuple[dict[str, torch.Tensor], float]]:
    """Train all clients of a round together (same results as ``loop_engine``, see the module doc)."""
    latent = needs_noise(global_model)
    names, shapes = zip(*((name, p.shape) for name, p in global_model.named_parameters()), strict=True)
    sizes = [s.numel() for s in shapes]
    template = global_model.state_dict()  # an update's names, in this order; buffers copied as they are
    order = sorted(range(len(client_rows)), key=lambda i: -client_rows[i].shape[0])
    updates: dict[int, tuple[dict[str, torch.Tensor], float]] = {}
    for first in range(0, len(order), CHUNK_CLIENTS):
        chunk = order[first:first + CHUNK_CLIENTS]
        plans = [round_plan(client_rows[i].shape[0], config.local_epochs, latent,
                            client_generator(config.seed, round_idx, client_ids[i])) for i in chunk]
        with torch.inference_mode():  # no autograd bookkeeping: a step is many small operations
            flat, losses = _train_chunk(global_model, [client_rows[i] for i in chunk], plans, config)
        flat = flat.clone()  # an ordinary tensor again: callers (attacks, tests) may change updates in place
        for i, row, loss in zip(chunk, flat.unbind(0), losses, strict=True):
            trained = {n: t.view(s) for n, t, s in zip(names, row.split(sizes), shapes, strict=True)}
            updates[i] = ({n: trained[n] if n in trained else t.clone() for n, t in template.items()}, loss)
    return [updates[i] for i in range(len(client_rows))]
