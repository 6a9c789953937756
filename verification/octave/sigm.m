function X = sigm(P)
%SIGM  The logistic function 1 ./ (1 + exp(-P)), elementwise (written for jaxcnn check, after the toolbox's sigm).
    X = 1 ./ (1 + exp(-P));
end
