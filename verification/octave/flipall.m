function X = flipall(X)
%FLIPALL  X flipped along every one of its dimensions (written for jaxcnn check, after the toolbox's flipall).
    for d = 1 : ndims(X)
        X = flip(X, d);
    end
end
