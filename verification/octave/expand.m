function B = expand(A, S)
%EXPAND  Each element of A repeated S(d) times along dimension d, a Kronecker product with ones
%   (written for jaxcnn check, after the toolbox's expand): expand([1 2; 3 4], [2 2]) is 4x4.
    idx = cell(1, max(ndims(A), numel(S)));
    for d = 1 : numel(idx)
        s = 1;
        if d <= numel(S)
            s = S(d);
        end
        idx{d} = ceil((1 : size(A, d) * s) / s);
    end
    B = A(idx{:});
end
