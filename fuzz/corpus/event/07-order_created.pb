B
ord1Ab3dE
dns*.apps.example.internal
ip10.0.0.7"az1"az2*0
az1
dnsapps.example.internal ÀÆéÕ*tok0ÀÆéÕ8€÷ÄÕJserverRAX€÷ÄÕ