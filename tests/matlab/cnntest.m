% DeepLearnToolbox CNN/cnntest.m (BSD): error rate and misclassified samples.
function [er, bad] = cnntest(net, x, y)
    net = cnnff(net, x);
    [~, h] = max(net.o);
    [~, a] = max(y);
    bad = find(h ~= a);
    er = numel(bad) / size(y, 2);
end
