"""A small numpy Elman RNN with the recurrent-layer interface of fl.nn.GRU / LSTM.

It tests the BPTT machinery (train/bptt.py, nn/sequence.py) independently of the fused
kernels: h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), torch.nn.RNN's names and shapes.
"""
import numpy as np

import fusedlearn as fl


class TanhRNN(fl.nn.Module):
    def __init__(self, input_size, hidden_size, dtype=np.float64, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        k = 1 / np.sqrt(hidden_size)
        self.hidden_size, self.num_layers, self.batch_first = hidden_size, 1, False
        self.weight_ih_l0 = fl.nn.Parameter(rng.uniform(-k, k, (hidden_size, input_size)).astype(dtype))
        self.weight_hh_l0 = fl.nn.Parameter(rng.uniform(-k, k, (hidden_size, hidden_size)).astype(dtype))
        self.bias_ih_l0 = fl.nn.Parameter(rng.uniform(-k, k, hidden_size).astype(dtype))
        self.bias_hh_l0 = fl.nn.Parameter(rng.uniform(-k, k, hidden_size).astype(dtype))
        self.grad_hx = None

    def forward(self, x, hx=None, lengths=None):
        T, B, _ = x.shape
        H = self.hidden_size
        h = np.zeros((B, H), self.weight_hh_l0.dtype) if hx is None else np.asarray(hx)[0].copy()
        hs = [h]
        for t in range(T):
            h = np.tanh(x[t] @ self.weight_ih_l0.data.T + self.bias_ih_l0.data
                        + h @ self.weight_hh_l0.data.T + self.bias_hh_l0.data)
            hs.append(h)
        self._x, self._hs = x, hs
        out = np.stack(hs[1:])
        return out, out[-1][None]

    def backward(self, grad_output, grad_h_n=None):
        x, hs = self._x, self._hs
        T = x.shape[0]
        gh = np.zeros_like(hs[0]) if grad_h_n is None else np.asarray(grad_h_n)[0].copy()
        grads = {n: np.zeros_like(p.data) for n, p in self._parameters.items()}
        gx = np.zeros_like(x)
        for t in range(T - 1, -1, -1):
            gh = gh + grad_output[t]
            ga = gh * (1 - hs[t + 1] ** 2)
            grads["weight_ih_l0"] += ga.T @ x[t]
            grads["weight_hh_l0"] += ga.T @ hs[t]
            grads["bias_ih_l0"] += ga.sum(0)
            grads["bias_hh_l0"] += ga.sum(0)
            gx[t] = ga @ self.weight_ih_l0.data
            gh = ga @ self.weight_hh_l0.data
        for n, p in self._parameters.items():
            p.grad = grads[n] if p.grad is None else p.grad + grads[n]
        self.grad_hx = gh[None]
        return gx
