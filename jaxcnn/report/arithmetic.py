"""The run page's section 4: the lecture's operations (rot180, one 'full' window, flipall and one dk entry,
the pooled δ going back) written out on this net's numbers. Each part returns (markup, the values its tables
show); the tables stay in the toolbox's layout (transposed maps), the one `convn` works on."""
from __future__ import annotations

import numpy as np

from ..verification import backprop as bp
from .analysis import Analysis, conv_layers
from .page import Html, join, row
from .tables import numbers_table, value


def kernel_tables(an: Analysis) -> tuple[Html, dict]:
    """Toolbox kernel k{1}{1} of the last 'c' layer, its rot180, and jaxcnn's stored kernel rot180(k)ᵀ."""
    l = conv_layers(an.tb)[-1]
    k = np.asarray(an.tb["layers"][l]["k"][0][0])
    jk = np.asarray(an.net.params["conv"][len(conv_layers(an.tb)) - 1]["k"])[:, :, 0, 0]
    values = {"kernel": k, "rot180": bp.rot180(k), "jaxcnn": jk}
    body = row([numbers_table(k, "t-kernel", f"layer {l + 1}: toolbox k{{1}}{{1}}"),
                numbers_table(bp.rot180(k), "t-rot180", "rot180(k{1}{1}) = flipdim(flipdim(k, 1), 2)"),
                numbers_table(jk, "t-jaxcnn-kernel", "jaxcnn k[:, :, 0, 0] = rot180(k{1}{1})ᵀ")])
    return body, values


def full_window(an: Analysis) -> tuple[Html, dict]:
    """One value of convn(d_next{1}, rot180(k{1}{1}), 'full') written out as the products of one window.

    full convolution with rot180(k) is a cross-correlation with k of δ zero-padded by K − 1 on every side:
    convn(d, rot180(k), 'full')(p, q) = Σ_{m,n} dpad(p + m, q + n)·k(m, n)."""
    l = conv_layers(an.tb)[-1]                  # the 'c' layer whose δ goes back through its kernels
    k = np.asarray(an.tb["layers"][l]["k"][0][0])
    d = np.asarray(an.result["layers"][l]["d"][0])[:, :, 0]
    K = k.shape[0]
    full = bp.convn_full(d[:, :, None], bp.rot180(k))[:, :, 0]
    p, q = full.shape[0] // 2, full.shape[1] // 2
    window = np.pad(d, K - 1)[p:p + K, q:q + K]
    products = window * k
    values = {"window": window, "products": products, "sum": float(products.sum()), "full": float(full[p, q]),
              "layer": l, "p": p, "q": q}
    body = (f"<p>Layer {l}'s δ gets, from map j = 1 of layer {l + 1}, convn(d{{1}}, rot180(k{{1}}{{1}}), 'full'). "
            f"Its entry ({p + 1}, {q + 1}) (toolbox layout, 1-based) is the window of d{{1}} zero-padded by K − 1 = "
            f"{K - 1} that starts there, times k{{1}}{{1}} element by element (the full convolution flips "
            f"rot180(k) back to k), summed:</p>"
            + row([numbers_table(window, "t-window", f"window of zero-padded d{{1}} of layer {l + 1}"),
                   numbers_table(k, "t-window-k", "k{1}{1}"),
                   numbers_table(products, "t-products", "products window .* k")])
            + f'<p class="eq">Σ products = {value("v-window-sum", values["sum"])}; '
            f"convn(d{{1}}, rot180(k{{1}}{{1}}), 'full')({p + 1}, {q + 1}) = {value('v-window-full', values['full'])}. "
            f"Summed over every j (and times the activation's derivative where layer {l} is a 'c' layer) this "
            f"is δ{{1}}({p + 1}, {q + 1}) of layer {l}.</p>")
    return Html(body), values


def dk_entry(an: Analysis) -> tuple[Html, dict]:
    """dk{1}{1}(u, v) of the last 'c' layer as convn(flipall(a{1}), d{1}, 'valid'), one entry written out.

    convn flips its second argument too, so entry (u, v) pairs a{1}(K − 1 − u + m, K − 1 − v + n) with d{1}(m, n):
    dk(u, v) = Σ_{m,n} a(K−1−u+m, K−1−v+n)·d(m, n) / N."""
    l = conv_layers(an.tb)[-1]
    a = np.asarray(an.result["a"][l - 1][0])
    d = np.asarray(an.result["layers"][l]["d"][0])
    K = an.tb["layers"][l]["kernelsize"]
    h, w = d.shape[:2]
    u, v = 0, 0
    window = a[K - 1 - u:K - 1 - u + h, K - 1 - v:K - 1 - v + w, 0]
    products = window * d[:, :, 0]
    dk = float(an.result["layers"][l]["dk"][0][0][u, v])
    values = {"flipall": bp.flipall(a)[:, :, 0], "d": d[:, :, 0], "products": products,
              "sum": float(products.sum()), "dk": dk}
    body = (f"<p>Layer {l + 1}: dk{{1}}{{1}} = convn(flipall(a{{1}}), d{{1}}, 'valid') / N with a{{1}} the "
            f"{a.shape[0]}×{a.shape[1]} map of layer {l} and N = 1 image. Because convn flips d{{1}} as well, entry "
            f"(u, v) = (1, 1) pairs a{{1}}(K − u + m, K − v + n) with d{{1}}(m, n), 1-based: the flips cancel and it is "
            f"the window of a{{1}} at offset K − 1 = {K - 1} times d{{1}}.</p>"
            + row([numbers_table(values["flipall"], "t-flipall", f"flipall(a{{1}}) of layer {l}"),
                   numbers_table(values["d"], "t-dk-d", f"d{{1}} of layer {l + 1}"),
                   numbers_table(products, "t-dk-products", "a{1} window .* d{1}")])
            + f'<p class="eq">Σ products / N = {value("v-dk-sum", values["sum"])}; '
            f'dk{{1}}{{1}}(1, 1) from cnnbp = {value("v-dk", dk)}.</p>')
    return Html(body), values


def pool_block(an: Analysis) -> tuple[Html, dict] | None:
    """A pooled δ block (≤ 3×3) of the last 's' layer that follows a 'c' layer, and what it becomes
    going back: expand(d, [s s 1]) / s² (mean) or expand(d, [s s 1]) .* mask (max)."""
    layers = an.tb["layers"]
    found = [l for l in range(2, len(layers)) if layers[l]["type"] == "s" and layers[l - 1]["type"] == "c"]
    if not found:
        return None
    l = found[-1]
    s, is_max = layers[l]["scale"], layers[l].get("pool", "mean") == "max"
    d = np.asarray(an.result["layers"][l]["d"][0])
    b = min(3, d.shape[0]), min(3, d.shape[1])
    block = d[:b[0], :b[1], :]
    expanded = bp.expand(block, [s, s, 1])
    back = expanded * an.result["mask"][l][0][:b[0] * s, :b[1] * s] if is_max else expanded / s ** 2
    values = {"block": block[:, :, 0], "back": back[:, :, 0], "s": s, "max": is_max, "layer": l}
    rule = "expand(d, [s s 1]) .* mask" if is_max else f"expand(d, [s s 1]) / s² (s = {s})"
    body = (f"<p>Layer {l + 1} ({'max' if is_max else 'mean'} pooling, scale {s}): the top-left "
            f"{b[0]}×{b[1]} block of d{{1}} (toolbox layout) goes back to layer {l} as {rule}, before layer {l}'s "
            f"activation derivative multiplies it.</p>"
            + row([numbers_table(block[:, :, 0], "t-pool-d", f"d{{1}} of layer {l + 1}, block"),
                   numbers_table(back[:, :, 0], "t-pool-back", rule)]))
    return Html(body), values


CONVENTIONS = Html("""<p><b>convn versus lax.conv.</b> MATLAB's <code>convn(a, k, 'valid')</code> is a true
convolution: it slides the kernel <em>flipped</em> (rot180) over <code>a</code>. <code>jax.lax.conv_general_dilated</code>,
like every deep-learning conv, is a cross-correlation: it slides the kernel as stored. The toolbox also keeps
every image transposed (<code>reshape(train_x', 28, 28, N)</code>). A true convolution of transposed maps with
<code>k</code> is a cross-correlation of the natural maps with <code>rot180(k)ᵀ</code>, so jaxcnn stores
<b>k[:, :, i, j] = rot180(k{i}{j})ᵀ</b> (<code>toolbox.kernel_to_toolbox</code> / <code>kernel_from_toolbox</code>)
and both compute the same numbers; the tables above show the toolbox kernel, its rot180 and jaxcnn's stored kernel.
The tables are in the toolbox's layout (transposed maps), the one <code>convn</code> works on.</p>""")


def arithmetic_section(an: Analysis) -> tuple[Html, dict]:
    """Section 4's body and the values its tables show (for the tests)."""
    parts, values = [], {}
    for name, fn, title in (("kernel", kernel_tables, "A kernel and its rot180"),
                            ("window", full_window, "One 'full' convolution window: one delta value"),
                            ("dk", dk_entry, "flipall and one entry of dk"),
                            ("pool", pool_block, "Through pooling: a pooled δ block and its expansion")):
        out = fn(an)
        if out is None:
            continue
        body, values[name] = out
        parts.append(Html(f"<h3>{title}</h3>{body}"))
    parts.append(CONVENTIONS)
    return join(parts), values
