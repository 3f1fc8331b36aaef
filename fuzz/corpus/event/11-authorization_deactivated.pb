r
az2