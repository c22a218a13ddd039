"""The vectorized engine: every sampled client of a round trained at once, as one batched computation.

Why: with small models and small clients, the loop engine spends its time in Python and PyTorch
overhead (one tiny forward, backward and Adam step per client and batch), not in arithmetic.
Training ``C`` clients together turns ``C`` tiny matrix products into one batched product, so the
overhead is paid once per step instead of once per client and step.

How:

- **Stacked weights.** Each client's parameters are one row of a flat ``(C, P)`` buffer (``P`` =
  parameters of the model); every layer's weight and bias are views into it, shaped
  ``(C, out, in)`` and ``(C, out)``. A layer is one ``torch.baddbmm`` over the client dimension.
- **Hand-written gradients.** The backward passes of these batched layers (``Linear``, ``ReLU``)
  and of the AE and VAE losses are written out: for layers this small, autograd's bookkeeping
  costs more than the arithmetic. The tests check them against the loop engine's autograd, in
  float32 and float64.
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
  per-row losses are computed first; then, per client, the ``n - floor(trim * n)`` lowest-loss of
  its ``n`` valid rows (padding never counts) get weight 1 / kept and the others 0, before the
  backward pass. Rows are picked by ``torch.topk`` (smallest, unsorted) as in the loop engine, on
  a client's valid rows only: one call per group of clients with the same number of valid rows,
  which keeps per client what the loop's one-client call keeps, so ties are broken the same way
  (a test checks this on heavily tied losses). The loss reported is the same trimmed mean.
- **Chunks.** Clients are processed in chunks of at most :data:`CHUNK_CLIENTS`, which bounds memory
  for federations of thousands of clients.

Results equal the loop engine's up to float rounding (sums are taken in a different order). With
trimming, that rounding could in principle reorder two rows whose losses differ by about 1e-7
relative at the cut and so keep the other one; exactly equal losses are resolved identically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from fedad_tutorial.training import RoundPlan, client_generator, needs_noise, round_plan

if TYPE_CHECKING:
    from fedad_tutorial.config import FederatedConfig

#: Largest number of clients trained in one batched computation.
CHUNK_CLIENTS = 256
#: ``torch.optim.Adam`` defaults.
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

Params = dict[str, torch.Tensor]
Tape = list[tuple[str | None, torch.Tensor]]  # per layer: (Linear name, its input) or (None, ReLU output)


def _linear(params: Params, name: str, h: torch.Tensor) -> torch.Tensor:
    """``nn.Linear`` ``name`` for every client at once: ``h`` is ``(C, rows, in)``."""
    return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))


def _linear_backward(params: Params, name: str, h: torch.Tensor, g: torch.Tensor, grads: Params) -> torch.Tensor:
    """Store the weight and bias gradients of :func:`_linear` given ``g`` = d loss / d output; return d/d ``h``."""
    grads[f"{name}.weight"] = torch.bmm(g.transpose(1, 2), h)
    grads[f"{name}.bias"] = g.sum(dim=1)
    return torch.bmm(g, params[f"{name}.weight"])


def _forward(seq: nn.Sequential, prefix: str, params: Params, h: torch.Tensor, tape: Tape) -> torch.Tensor:
    """Apply a ``Linear``/``ReLU`` stack to ``h`` (``(C, rows, in)``), recording what backward needs."""
    for name, layer in seq.named_children():
        if isinstance(layer, nn.Linear):
            tape.append((f"{prefix}.{name}", h))
            h = _linear(params, f"{prefix}.{name}", h)
        elif isinstance(layer, nn.ReLU):
            h = torch.relu(h)
            tape.append((None, h))
        else:
            raise TypeError(f"the vectorized engine cannot batch a {type(layer).__name__} layer")
    return h


def _backward(tape: Tape, params: Params, g: torch.Tensor, grads: Params) -> torch.Tensor:
    """Backpropagate ``g`` (d loss / d output of a stack) through :func:`_forward`'s tape."""
    for name, saved in reversed(tape):
        if name is None:
            g = torch.ops.aten.threshold_backward(g, saved, 0.0)  # ReLU's backward, as autograd does it
        else:
            g = _linear_backward(params, name, saved, g, grads)
    return g


def _loss_and_grads(model: nn.Module, params: Params, x: torch.Tensor, noise: torch.Tensor | None,
                    row_weights: torch.Tensor, trim: float = 0.0,
                    groups: tuple[tuple[int, int, int], ...] = ()) -> tuple[torch.Tensor, Params]:
    """Each client's batch loss ``(C,)`` and the gradients of its parameters.

    ``row_weights`` ``(C, rows)`` is 1 / (valid rows) on a client's valid rows and 0 on padding,
    so each loss is ``model.loss`` of the valid rows. With ``trim > 0`` it is replaced, once the
    per-row losses are known, by :func:`_trimmed_weights` (``groups`` as described there), so each
    loss is :func:`~fedad_tutorial.training.batch_loss` of the valid rows.
    """
    grads: Params = {}
    encoder_tape: Tape = []
    decoder_tape: Tape = []
    if model.spec.kind == "ae":
        diff = _forward(model.decoder, "decoder", params,
                        _forward(model.encoder, "encoder", params, x, encoder_tape), decoder_tape) - x
        per_row = (diff**2).mean(dim=2)
        if trim > 0.0:
            row_weights = _trimmed_weights(per_row, groups, trim)
        losses = (per_row * row_weights).sum(dim=1)
        g = _backward(decoder_tape, params, diff * (row_weights.unsqueeze(2) * (2.0 / x.shape[2])), grads)
        _backward(encoder_tape, params, g, grads)
        return losses, grads

    beta = model.spec.beta
    h = _forward(model.encoder, "encoder", params, x, encoder_tape)
    mu, raw_logvar = _linear(params, "to_mu", h), _linear(params, "to_logvar", h)
    logvar = raw_logvar.clamp(-10.0, 10.0)
    std, var = torch.exp(0.5 * logvar), logvar.exp()
    diff = _forward(model.decoder, "decoder", params, mu + std * noise, decoder_tape) - x
    per_row = 0.5 * (diff**2).sum(dim=2) + beta * (0.5 * (mu**2 + var - 1.0 - logvar).sum(dim=2))
    if trim > 0.0:
        row_weights = _trimmed_weights(per_row, groups, trim)
    losses = (per_row * row_weights).sum(dim=1)
    w = row_weights.unsqueeze(2)
    g_z = _backward(decoder_tape, params, diff * w, grads)
    g_mu = g_z + beta * w * mu
    g_logvar = 0.5 * (g_z * noise * std + beta * w * (var - 1.0))
    g_logvar = g_logvar * ((raw_logvar >= -10.0) & (raw_logvar <= 10.0))  # clamp's backward
    g_h = _linear_backward(params, "to_mu", h, g_mu, grads)
    g_h = g_h + _linear_backward(params, "to_logvar", h, g_logvar, grads)
    _backward(encoder_tape, params, g_h, grads)
    return losses, grads


def _trimmed_weights(per_row: torch.Tensor, groups: tuple[tuple[int, int, int], ...], trim: float) -> torch.Tensor:
    """Row weights of a trimmed step: 1 / kept on each client's kept rows, 0 elsewhere (padding too).

    ``groups`` lists ``(first, last, n)``: clients ``[first:last]`` have ``n`` valid rows (the first
    ``n`` of the batch). Of those, each keeps its ``n - floor(trim * n)`` lowest-loss rows, chosen by
    the call :func:`~fedad_tutorial.training.batch_loss` makes (``torch.topk``, smallest, unsorted)
    on exactly its ``n`` valid losses: a batched ``topk`` handles each row as the one-row call would,
    so tied losses are resolved as in the loop engine.
    """
    weights = torch.zeros_like(per_row)
    for first, last, n in groups:
        keep = n - int(trim * n)  # Python float arithmetic, as in batch_loss
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


def _train_chunk(model: nn.Module, rows: list[torch.Tensor], plans: list[RoundPlan],
                 config: FederatedConfig) -> list[tuple[dict[str, torch.Tensor], float]]:
    """Train clients sorted by row count (largest first) from the global weights; one update each."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [s.numel() for s in shapes]
    global_flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    num = len(rows)
    flat = global_flat.expand(num, -1).clone()  # (C, P) one row of weights per client
    exp_avg, exp_avg_sq = torch.zeros_like(flat), torch.zeros_like(flat)
    grad, work = torch.empty_like(flat), torch.empty_like(flat)  # reused buffers
    loss_sum = torch.zeros(num, dtype=torch.float64)

    counts = torch.tensor([r.shape[0] for r in rows])
    x_all = _pad(rows, 0)  # (C, n_max, d)
    perms = _pad([p.permutations for p in plans], 1)  # (C, epochs, n_max), padded with row 0
    noise = None if plans[0].noise is None else _pad([p.noise for p in plans], 1)  # (C, epochs, n_max, L)
    batch, epochs, (n_max, dim) = config.batch_size, perms.shape[1], x_all.shape[1:]
    row_offsets = torch.arange(num).unsqueeze(1) * n_max  # client c's rows start at c * n_max in x_all

    # The steps of an epoch, the same every epoch: (first row, clients with a batch, batch width,
    # row weights). Clients are sorted largest first, so those with a batch form a prefix [:k].
    # For trimming, also the clients grouped by valid rows: (first, last, n) for clients [first:last].
    schedule = []
    for start in range(0, n_max, batch):
        k, width = int((counts > start).sum()), min(batch, n_max - start)
        valid = (start + torch.arange(width)).unsqueeze(0) < counts[:k].unsqueeze(1)  # (k, width)
        n_valid = valid.sum(dim=1).tolist()  # non-increasing: clients are sorted largest first
        groups = tuple((n_valid.index(n), len(n_valid) - n_valid[::-1].index(n), n)
                       for n in sorted(set(n_valid), reverse=True))
        schedule.append((start, k, width, valid.to(x_all.dtype) / valid.sum(dim=1, keepdim=True), groups))
    # Adam's bias corrections for every step: at step j of epoch e, client c is at its step e * nb_c + j + 1.
    batches = (counts + batch - 1) // batch  # nb_c: batches per epoch
    adam_steps = (torch.arange(epochs).view(-1, 1, 1) * batches + torch.arange(len(schedule)).view(1, -1, 1)
                  + 1).double()  # (epochs, steps per epoch, C); entries of clients without a batch go unused
    neg_step_sizes = (-config.lr / (1.0 - BETA1**adam_steps)).to(flat.dtype)
    bias_corrections2_sqrt = (1.0 - BETA2**adam_steps).sqrt().to(flat.dtype)

    for epoch in range(epochs):
        order = (perms[:, epoch] + row_offsets).reshape(-1)
        x_epoch = x_all.reshape(-1, dim).index_select(0, order).view(num, n_max, dim)  # rows in plan order
        for j, (start, k, width, row_weights, groups) in enumerate(schedule):
            xb = x_epoch[:k, start:start + width]
            nb = None if noise is None else noise[:k, epoch, start:start + width]
            params = {n: v.view(k, *s) for n, v, s in zip(names, flat[:k].split(sizes, dim=1), shapes, strict=True)}
            losses, grads = _loss_and_grads(model, params, xb, nb, row_weights, config.trim, groups)
            g = torch.cat([grads[n].reshape(k, -1) for n in names], dim=1, out=grad[:k])
            loss_sum[:k] += losses.double()

            # torch.optim.Adam's single-tensor update, with a step count per client.
            m, v = exp_avg[:k], exp_avg_sq[:k]
            m.lerp_(g, 1.0 - BETA1)
            v.mul_(BETA2).addcmul_(g, g, value=1.0 - BETA2)
            denom = torch.sqrt(v, out=work[:k]).div_(bias_corrections2_sqrt[epoch, j, :k].unsqueeze(1)).add_(EPS)
            flat[:k].addcmul_(torch.div(m, denom, out=denom), neg_step_sizes[epoch, j, :k].unsqueeze(1))

    mean_loss = (loss_sum / (epochs * batches).clamp(min=1)).tolist()
    return [({n: t.view(s) for n, t, s in zip(names, row.split(sizes), shapes, strict=True)}, loss)
            for row, loss in zip(flat.unbind(0), mean_loss, strict=True)]


def vectorized_engine(global_model: nn.Module, client_rows: list[torch.Tensor], client_ids: list[int],
                      round_idx: int, config: FederatedConfig) -> list[tuple[dict[str, torch.Tensor], float]]:
    """Train all clients of a round together (same results as ``loop_engine``, see the module doc)."""
    latent = needs_noise(global_model)
    order = sorted(range(len(client_rows)), key=lambda i: -client_rows[i].shape[0])
    updates: dict[int, tuple[dict[str, torch.Tensor], float]] = {}
    for first in range(0, len(order), CHUNK_CLIENTS):
        chunk = order[first:first + CHUNK_CLIENTS]
        plans = [round_plan(client_rows[i].shape[0], config.local_epochs, latent,
                            client_generator(config.seed, round_idx, client_ids[i])) for i in chunk]
        trained = _train_chunk(global_model, [client_rows[i] for i in chunk], plans, config)
        for i, update in zip(chunk, trained, strict=True):
            updates[i] = update
    return [updates[i] for i in range(len(client_rows))]
