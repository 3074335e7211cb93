import glob, csv, statistics, sys
first={}
for f in glob.glob('/tmp/probe-trace-*.txt'):
    for line in open(f):
        st,seq,t=map(int,line.split())
        k=(st,seq)
        if k not in first or t<first[k]: first[k]=t
rows=list(csv.DictReader(open(sys.argv[1] if len(sys.argv)>1 else '/tmp/lat.csv')))
for r in rows:
    if not r['scenario'].startswith('S1'): continue
    s=int(r['seq'])
    first.setdefault((0,s),int(r['sent_us'])); first.setdefault((7,s),int(r['arrived_us']))
names={0:'sent(node)',1:'A read',3:'A batch prepared',4:'A commit acked',5:'B notified',6:'B written',7:'arrived(node)'}
order=[0,1,3,4,5,6,7]
seqs=sorted({s for (st,s) in first if st==0})
print('messages',len(seqs))
tot=[]
for a,b in zip(order,order[1:]):
    d=[first[(b,s)]-first[(a,s)] for s in seqs if (a,s) in first and (b,s) in first]
    if not d: print(names[a],'->',names[b],'none'); continue
    d.sort()
    print(f"{names[a]:>18} -> {names[b]:<18} n={len(d):6} mean={statistics.mean(d)/1000:7.3f} p50={d[len(d)//2]/1000:7.3f} p90={d[int(len(d)*.9)]/1000:7.3f} ms")
d=[first[(7,s)]-first[(0,s)] for s in seqs if (7,s) in first]
print('total mean', statistics.mean(d)/1000)
for a,b in [(3,5),(5,7),(4,7)]:
    d=sorted(first[(b,s)]-first[(a,s)] for s in seqs if (a,s) in first and (b,s) in first)
    print(names[a],'->',names[b], 'mean %.3f p50 %.3f'%(statistics.mean(d)/1000, d[len(d)//2]/1000))
