module github.com/tenet-net/tenet

go 1.25.0
