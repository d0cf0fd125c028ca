"""An independent float64 reference, written from SPEC.md alone (not from fade_triton's code):
explicit tap loops, ``up`` by index repetition, no unfold, no interpolate."""
import torch
import torch.nn.functional as F


def up(t, s):
    return t.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)


def conv1x1(x, weight, bias=None):
    out = torch.einsum("oc,bchw->bohw", weight[:, :, 0, 0], x)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def conv3x3(x, weight, bias, groups=1):
    """'same' cross-correlation, zero padding 1, by an explicit loop over the 9 taps."""
    b, c, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1))
    out = bias.view(1, -1, 1, 1).expand(b, -1, h, w).clone()
    for i in range(3):
        for j in range(3):
            patch = xp[:, :, i:i + h, j:j + w]
            if groups == 1:
                out = out + torch.einsum("oc,bchw->bohw", weight[:, :, i, j], patch)
            else:  # depthwise: groups == channels
                out = out + weight[:, 0, i, j].view(1, -1, 1, 1) * patch
    return out


def reassemble(x, masks, k, s, groups=1):
    """SPEC.md: out[b,c,y,x'] = sum_ij masks[b, g*K2 + i*K+j, y, x'] * x[b, c, y//s+i-r, x'//s+j-r].
    The output has the masks' size, which may be smaller than s x x's (then cropped)."""
    b, c, h, w = x.shape
    oh, ow = masks.shape[2:]
    r = k // 2
    xp = F.pad(x, (r, r, r, r))
    cg = c // groups
    out = torch.zeros(b, c, oh, ow, dtype=x.dtype)
    for ch in range(c):
        g = ch // cg
        for i in range(k):
            for j in range(k):
                shifted = up(xp[:, ch:ch + 1, i:i + h, j:j + w], s)[..., :oh, :ow]
                out[:, ch:ch + 1] += masks[:, g * k * k + i * k + j:g * k * k + i * k + j + 1] * shifted
    return out


def fade(en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias, scale):
    """FADE forward (FADE-Lite when kernel_weight is depthwise (K2, 1, 3, 3) and E == K2). An ``en``
    smaller than scale x ``de`` (by less than scale) crops every upsampled map to its size."""
    args = [t.double() for t in (en, de, gate_weight, gate_bias, en_weight, en_bias, de_weight, kernel_weight, kernel_bias)]
    en, de, gw, gb, we, be, wd, wk, bk = args
    k2 = wk.shape[0]
    k = int(round(k2 ** 0.5))
    groups = k2 if (wk.shape[1] == 1 and we.shape[0] == k2 and k2 > 1) else 1
    oh, ow = en.shape[2:]
    gate = torch.sigmoid(up(conv1x1(de, gw, gb), scale)[..., :oh, :ow])
    logits = (conv3x3(conv1x1(en, we, be), wk, bk, groups)
              + up(conv3x3(conv1x1(de, wd), wk, bk, groups), scale)[..., :oh, :ow])
    masks = torch.softmax(logits, dim=1)
    return gate * en + (1 - gate) * reassemble(de, masks, k, scale)


def conv2d(x, weight, bias, dilation=1):
    """'same' cross-correlation with an odd-or-even k x k kernel, zero padding
    int((k - 1) * dilation / 2), by an explicit loop over the taps."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    pad = int((k - 1) * dilation / 2)
    xp = F.pad(x, (pad, pad, pad, pad))
    oh, ow = h + 2 * pad - dilation * (k - 1), w + 2 * pad - dilation * (k - 1)
    out = bias.view(1, -1, 1, 1).expand(b, -1, oh, ow).clone()
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i * dilation:i * dilation + oh, j * dilation:j * dilation + ow]
            out = out + torch.einsum("oc,bchw->bohw", weight[:, :, i, j], patch)
    return out


def carafe_pack(x, compressor_weight, compressor_bias, encoder_weight, encoder_bias, scale, k, groups, dilation=1):
    """mmcv's CARAFEPack forward restated: compress (1x1), encode (k_enc x k_enc, dilated), pixel
    shuffle by index (mask channel c*s*s + i*s + j at (y, x) -> channel c at (y*s + i, x*s + j)),
    softmax over each group's K*K taps, reassemble."""
    x, wc, bc, we, be = (t.double() for t in (x, compressor_weight, compressor_bias, encoder_weight, encoder_bias))
    mask = conv2d(conv1x1(x, wc, bc), we, be, dilation)
    b, cm, h, w = mask.shape
    shuffled = torch.zeros(b, cm // scale ** 2, h * scale, w * scale, dtype=mask.dtype)
    for i in range(scale):
        for j in range(scale):
            shuffled[:, :, i::scale, j::scale] = mask[:, i * scale + j::scale * scale]
    oh, ow = h * scale, w * scale
    masks = shuffled.view(b, groups, k * k, oh, ow).softmax(2).view(b, groups * k * k, oh, ow)
    return reassemble(x, masks, k, scale, groups)
