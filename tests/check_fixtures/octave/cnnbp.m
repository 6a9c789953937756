function net = cnnbp(net, y)
% The lecture's backprop ported for jaxcnn's tests in another style: conv2 sample by sample where the
% lecture uses convn over the whole batch, repelem for expand, rot90(k, 2) for rot180.
    n = numel(net.layers);
    N = size(y, 2);
    net.e = net.o - y;
    net.L = sum(net.e(:) .^ 2) / (2 * N);
    net.od = net.e .* net.o .* (1 - net.o);
    net.fvd = net.ffW' * net.od;
    if strcmp(net.layers{n}.type, 'c')
        net.fvd = net.fvd .* net.fv .* (1 - net.fv);
    end
    [h, w, ~] = size(net.layers{n}.a{1});
    for j = 1 : numel(net.layers{n}.a)
        net.layers{n}.d{j} = reshape(net.fvd((j - 1) * h * w + (1 : h * w), :), h, w, N);
    end
    for l = n - 1 : -1 : 2
        up = net.layers{l + 1};
        for i = 1 : numel(net.layers{l}.a)
            a = net.layers{l}.a{i};
            if strcmp(up.type, 's')
                s = up.scale;
                back = repelem(up.d{i}, s, s, 1) / s ^ 2;
                net.layers{l}.d{i} = a .* (1 - a) .* back;
            else
                z = zeros(size(a));
                for j = 1 : numel(up.a)
                    for m = 1 : N
                        z(:, :, m) = z(:, :, m) + conv2(up.d{j}(:, :, m), rot90(up.k{i}{j}, 2), 'full');
                    end
                end
                net.layers{l}.d{i} = z;
            end
        end
    end
    for l = 2 : n
        if strcmp(net.layers{l}.type, 'c')
            for j = 1 : numel(net.layers{l}.a)
                d = net.layers{l}.d{j};
                for i = 1 : numel(net.layers{l - 1}.a)
                    a = net.layers{l - 1}.a{i};
                    g = zeros(size(net.layers{l}.k{i}{j}));
                    for m = 1 : N
                        g = g + rot90(conv2(a(:, :, m), rot90(d(:, :, m), 2), 'valid'), 2);
                    end
                    net.layers{l}.dk{i}{j} = g / N;
                end
                net.layers{l}.db{j} = sum(d(:)) / N;
            end
        end
    end
    net.dffW = net.od * net.fv' / N;
    net.dffb = sum(net.od, 2) / N;
end
